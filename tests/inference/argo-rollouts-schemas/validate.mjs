// Validates Argo Rollouts objects (a JSON array in the file named by argv[2]) with the
// validators @kubernetes-models/argo-rollouts generates from Argo Rollouts' API types.
// Prints a JSON array of problems, one per invalid object.
import { Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { readFileSync } from "node:fs";

const kinds = { Rollout, AnalysisTemplate };
const problems = [];
for (const object of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const Kind = kinds[object.kind];
  if (Kind === undefined) {
    problems.push(`${object.kind}: not a kind this check knows`);
    continue;
  }
  try {
    new Kind(object).validate();
  } catch (error) {
    problems.push(`${object.kind} ${object.metadata?.name}: ${error.message}`);
  }
}
console.log(JSON.stringify(problems));

"""platformctl rollouts: the PR preview of what would canary, and the deploy job's wait.

The preview runs on real offline plans of a stack and of the same stack with one setting
changed. The wait runs against a stand-in kubectl that answers with Rollout objects as the
API server returns them (status.phase, status.observedGeneration as a string, status.abort).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from platformctl.cli import app
from platformctl.offline import run_offline_plan
from platformctl.rollouts import Canary, preview, template_changes, verdict, wait_for

from .conftest import ROOT

REVISION, NEW_REVISION = "a09a35458c702b33eeacc393d103063234e8bc28", "b" * 40


@pytest.fixture(scope="module")
def staging_plans(project, tmp_path_factory):
    """staging as committed, and staging with its model moved to a new revision."""
    stacks = tmp_path_factory.mktemp("stacks")
    shutil.copytree(ROOT / "stacks", stacks, dirs_exist_ok=True)
    path = stacks / "Pulumi.staging.yaml"
    text = path.read_text()
    served = f"        modelId: Qwen/Qwen2.5-7B-Instruct\n        revision: {REVISION}"  # the deployment's, not the mirror's
    assert text.count(served) == 1
    path.write_text(text.replace(served, served.replace(REVISION, NEW_REVISION)))
    base = run_offline_plan(project, "staging").to_json()
    head = run_offline_plan(dataclasses.replace(project, stack_config_dir=stacks), "staging").to_json()
    return base, head, stacks


def test_a_new_model_revision_would_canary_and_says_why(staging_plans):
    base, head, _ = staging_plans
    [row] = preview(head, base)
    assert (row["deployment"], row["action"], row["change"]) == ("qwen-7b", "canary", "10 % → 50 % → 100 %")
    assert row["why"] == ["MODEL_REVISION a09a354 → bbbbbbb"]
    [same] = preview(base, base)
    assert (same["action"], same["why"]) == ("none", [])


def test_a_deployment_becoming_a_rollout_is_created_at_full_weight(staging_plans):
    base, head, _ = staging_plans
    as_deployment = json.loads(json.dumps(base))
    for resource in as_deployment["resources"]:
        if resource["type"] == "kubernetes:argoproj.io/v1alpha1:Rollout":
            resource["type"], resource["name"] = "kubernetes:apps/v1:Deployment", resource["name"].replace("-rollout", "-deployment")
    [row] = preview(head, as_deployment)
    assert row["action"] == "create" and "becomes a Rollout" in row["change"]
    [back] = preview(as_deployment, head)  # the canary switched off again
    assert back["action"] == "create" and "becomes a Deployment" in back["change"]


def test_template_changes_name_the_version_the_build_and_each_setting():
    def template(version, tag, revision, cpu="1"):
        return {"metadata": {"labels": {"app.kubernetes.io/version": version},
                             "annotations": {"platform.gpu-inference/image-tag": tag}},
                "spec": {"containers": [{"env": [{"name": "MODEL_REVISION", "value": revision}], "resources": {"cpu": cpu}}]}}  # fmt: skip

    old = template("0.3.0", "0.3.0-abc1234", REVISION)
    assert template_changes(old, template("0.3.1", "0.3.1-def5678", REVISION)) == [
        "image version 0.3.0 → 0.3.1", "image build 0.3.0-abc1234 → 0.3.1-def5678"]
    assert template_changes(old, template("0.3.0", "0.3.0-fff0000", REVISION)) == ["image build 0.3.0-abc1234 → 0.3.0-fff0000"]
    assert template_changes(old, template("0.3.0", "0.3.0-abc1234", REVISION, cpu="2")) == ["pod spec"]


def test_the_preview_command_writes_the_pr_comment_table(staging_plans, tmp_path):
    base, _, stacks = staging_plans
    (tmp_path / "base.json").write_text(json.dumps(base))
    result = CliRunner().invoke(app, ["rollouts", "preview", "--stack", "staging", "--stacks-dir", str(stacks),
                                      "--compare-to", str(tmp_path / "base.json"), "--format", "md"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| qwen-7b | inference | **canary** 10 % → 50 % → 100 % | MODEL_REVISION a09a354 → bbbbbbb |" in result.output
    bad = CliRunner().invoke(app, ["rollouts", "preview", "--stack", "staging", "--compare-to", str(tmp_path / "nope.json")])
    assert bad.exit_code == 2 and "not a readable plan JSON" in bad.output


# --------------------------------------------------------------------------- wait


def _rollout(generation: int, observed: int, phase: str, message: str = "", abort: bool = False) -> dict:
    status = {"observedGeneration": str(observed), "phase": phase, "message": message}
    if abort:
        status["abort"] = True
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"generation": generation},
            "status": status}  # fmt: skip


def test_the_verdict_waits_for_the_new_spec_and_reads_promotion_and_rollback():
    assert verdict(_rollout(4, 3, "Healthy"))[0] == "progressing"  # last deploy's Healthy says nothing yet
    assert verdict(_rollout(4, 4, "Paused", "CanaryPauseStep")) == ("progressing", "Paused: CanaryPauseStep")
    assert verdict(_rollout(4, 4, "Healthy")) == ("healthy", "")
    aborted = "RolloutAborted: Metric \"error-ratio\" assessed Failed due to failed (2) > failureLimit (1)"
    assert verdict(_rollout(4, 4, "Degraded", aborted, abort=True)) == ("degraded", aborted)


FAKE_KUBECTL = """#!{python}
import json, sys
from pathlib import Path
script = Path({script!r})
answers = json.loads(script.read_text())
name = sys.argv[sys.argv.index("rollout") + 1]
assert sys.argv[1] == "--kubeconfig" and Path(sys.argv[2]).name.endswith(".kubeconfig"), sys.argv
queue = answers[name]
print(json.dumps(queue.pop(0) if len(queue) > 1 else queue[0]))
script.write_text(json.dumps(answers))
"""


def _kubectl(tmp_path: Path, answers: dict[str, list[dict]]) -> str:
    script = tmp_path / "answers.json"
    script.write_text(json.dumps(answers))
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable, script=str(script)))
    kubectl.chmod(0o755)
    (tmp_path / "eks.kubeconfig").write_text("")
    return str(kubectl)


def _wait(tmp_path: Path, stack: str, kubectl: str, *extra: str):
    return CliRunner().invoke(app, ["rollouts", "wait", "--stack", stack, "--kubeconfig", f"eks={tmp_path / 'eks.kubeconfig'}",
                                    "--kubectl", kubectl, "--poll-seconds", "0", *extra])  # fmt: skip


def test_wait_passes_once_the_canary_is_promoted(tmp_path):
    kubectl = _kubectl(tmp_path, {"qwen-7b": [_rollout(2, 1, "Healthy"), _rollout(2, 2, "Paused", "CanaryPauseStep"),
                                              _rollout(2, 2, "Progressing"), _rollout(2, 2, "Healthy")]})  # fmt: skip
    result = _wait(tmp_path, "staging", kubectl)
    assert result.exit_code == 0, result.output
    assert "eks/inference/qwen-7b: promoted" in result.output and "Paused: CanaryPauseStep" in result.output


def test_wait_fails_the_job_when_the_canary_rolled_back(tmp_path):
    aborted = 'RolloutAborted: Metric "p99-latency" assessed Failed due to failed (2) > failureLimit (1)'
    kubectl = _kubectl(tmp_path, {"qwen-7b": [_rollout(2, 2, "Progressing"), _rollout(2, 2, "Degraded", aborted, abort=True)]})
    result = _wait(tmp_path, "staging", kubectl)
    assert result.exit_code == 1
    assert f"eks/inference/qwen-7b: ROLLED BACK: {aborted}" in result.output


def test_wait_gives_up_at_the_canarys_deadline():
    clock = iter(range(0, 100000, 1000))
    canary = Canary("eks", "inference", "qwen-7b", (10, 100), 2500)
    import platformctl.rollouts as module

    original = module._get
    module._get = lambda kubectl, kubeconfig, c: _rollout(2, 2, "Paused", "CanaryPauseStep")
    try:
        results = wait_for([(canary, Path("k"))], "kubectl", 0, clock=lambda: next(clock), sleep=lambda s: None)
    finally:
        module._get = original
    assert results == {"eks/inference/qwen-7b": ("timeout", "still Paused: CanaryPauseStep after 2500 s")}


def test_wait_refuses_to_guess_a_missing_cluster(tmp_path):
    result = CliRunner().invoke(app, ["rollouts", "wait", "--stack", "hybrid", "--stacks-dir", str(ROOT / "examples" / "stacks"),
                                      "--kubeconfig", f"eks={tmp_path / 'eks.kubeconfig'}"])  # fmt: skip
    assert result.exit_code == 2 and "canaries on privateCloud: pass --kubeconfig privateCloud=PATH" in result.output


def test_list_gives_the_deploy_job_what_it_waits_for():
    result = CliRunner().invoke(app, ["rollouts", "list", "--stack", "prod", "--format", "json"])
    assert result.exit_code == 0, result.output
    [canary] = json.loads(result.output)
    config = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())["config"]["platform:inference"]
    steps = config["deployments"][0]["canary"]["steps"]
    assert canary["steps"] == [s["weight"] for s in steps]
    assert canary["timeoutSeconds"] == sum(s.get("pauseSeconds") or 0 for s in steps) + 1200 * len(steps)
    # The deploy job outlasts the longest stack's wait, with room for `pulumi up` itself.
    job = yaml.safe_load((ROOT / ".github/workflows/pulumi-up.yml").read_text())["jobs"]["up"]
    assert job["timeout-minutes"] * 60 >= canary["timeoutSeconds"] + 3600

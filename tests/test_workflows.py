"""GitHub workflows: valid against GitHub's schema, and doing what the README promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import ROOT, STACKS

WORKFLOWS = ROOT / ".github/workflows"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def _schema_check(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
    )


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads a bare `on` as true
    return data


def test_all_workflows_validate_against_the_github_workflow_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"preview.yml", "deploy.yml", "test.yml"}
    result = _schema_check(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: pull_request\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    assert _schema_check(broken).returncode != 0


def _pulumi_step(job: dict) -> dict:
    [step] = [s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    return step


def test_preview_runs_on_pull_requests_for_every_stack_and_comments():
    workflow = _load("preview.yml")
    assert "pull_request" in workflow["on"]
    assert workflow["permissions"]["pull-requests"] == "write"
    assert workflow["permissions"]["id-token"] == "write"
    job = workflow["jobs"]["preview"]
    assert sorted(job["strategy"]["matrix"]["stack"]) == sorted(STACKS)
    step = _pulumi_step(job)
    assert step["with"]["command"] == "preview"
    assert step["with"]["comment-on-pr"] is True
    assert step["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"


def test_deploy_goes_dev_then_staging_then_prod_each_in_its_environment():
    workflow = _load("deploy.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    assert jobs["dev"]["needs"] == "test"
    assert jobs["staging"]["needs"] == "dev"
    assert jobs["prod"]["needs"] == "staging"
    for stack in ("dev", "staging", "prod"):
        assert jobs[stack]["with"]["stack"] == stack
    up = _load("pulumi-up.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"
    assert _pulumi_step(up)["with"]["command"] == "up"


def test_ci_entry_point_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n## ")[0]
    assert "make test" in (ROOT / ".ci/run").read_text()


def _platformctl_calls() -> list[list[str]]:
    """Each `platformctl <group> <command>` the workflows run, with the options they pass."""
    import re
    import shlex

    calls = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in _load(path.name)["jobs"].values():
            for step in job.get("steps", []):
                text = step.get("run", "").replace("\\\n", " ")
                for match in re.finditer(r"platformctl ([^;|>&\n]+)", text):
                    calls.append(shlex.split(match.group(1).replace("${args[@]}", "").replace('"', "")))
    return calls


def test_every_platformctl_command_the_workflows_run_exists():
    import re

    from typer.testing import CliRunner

    from platformctl.cli import app

    calls = _platformctl_calls()
    assert ["rollouts", "wait"] in [c[:2] for c in calls] and ["rollouts", "preview"] in [c[:2] for c in calls]
    for call in calls:
        command = [word for word in call[:2] if not word.startswith("-")]
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0, f"platformctl {' '.join(command)}: {result.output}"
        for option in (word.split("=")[0] for word in call if word.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.output), (
                f"platformctl {' '.join(command)} has no {option}")


def test_the_deploy_job_waits_for_the_canaries_after_pulumi_up():
    steps = _load("pulumi-up.yml")["jobs"]["up"]["steps"]
    names = [step.get("name", step.get("uses", "")) for step in steps]
    up = names.index(next(n for n in names if str(n).startswith("pulumi/actions@")))
    wait = names.index("Wait for the canaries")
    assert wait > up
    script = steps[wait]["run"]
    assert 'platformctl rollouts wait --stack "$STACK"' in script
    assert "steps.up.outputs.clusterName" in script  # the EKS kubeconfig from the stack's own output


def test_the_test_job_builds_the_images_with_buildx_and_runs_the_ci_entry_point():
    """GitHub-hosted runners have a Docker engine: buildx builds, docker run smoke-tests (tests/images)."""
    for name, job in (("test.yml", "test"), ("deploy.yml", "test")):
        steps = _load(name)["jobs"][job]["steps"]
        job_env = _load(name)["jobs"][job]["env"]
        assert job_env["PLATFORM_IMAGE_ENGINE"] == "docker", name
        uses = [str(step.get("uses", "")) for step in steps]
        buildx = uses.index(next(u for u in uses if u.startswith("docker/setup-buildx-action@")))
        ci = next(i for i, step in enumerate(steps) if "bash .ci/run" in str(step.get("run", "")))
        assert buildx < ci, name
        assert steps[buildx]["with"]["driver"] == "docker"  # built images visible to docker run
    ci_run = (ROOT / ".ci/run").read_text()
    assert ci_run.index("make images") < ci_run.index("make test")

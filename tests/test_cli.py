"""platformctl plan as users run it: text, JSON, and every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from platformctl.cli import app
from platformctl.offline import SECRET, UNKNOWN

from .conftest import ROOT

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_text_plan_groups_by_component_and_summarises(plans, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = invoke("plan", "--stack", "prod")
    assert result.exit_code == 0, result.output
    custom = [r for r in plans["prod"].resources if r.custom and not r.is_provider]
    assert f"Plan: stack prod: {len(custom)} resources, 2 explicit providers, 13 components" in result.stdout
    for component in ("network  platform:network:Network", "eks  platform:eks:Cluster", "gpu  platform:gpu:CapacityPool",
                      "inference-image  platform:inference:Image", "serving-eks  platform:inference:ModelServing", "mirror  platform:mirror:ModelMirror",
                      "cost  platform:cost:CostGuardrails"):
        assert component in result.stdout
    assert "aws:ec2/natGateway:NatGateway" in result.stdout
    assert "not a diff against deployed state" in result.stdout


def test_json_plan_has_wire_inputs_and_relationships(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "plan.json"
    result = invoke("plan", "--stack", "dev", "--format", "json", "--output", str(out))
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    assert (plan["project"], plan["stack"], plan["kind"]) == ("platform", "dev", "static-offline-plan")
    vpc = next(r for r in plan["resources"] if r["type"] == "aws:ec2/vpc:Vpc")
    assert vpc["inputs"]["cidrBlock"] == "10.20.0.0/16"  # camelCase wire names
    assert vpc["inputs"]["enableDnsHostnames"] is True
    assert vpc["parent"].endswith("platform:network:Network::network")
    assert vpc["provider"].endswith("pulumi:providers:aws::aws")
    subnet = next(r for r in plan["resources"] if r["name"] == "network-private-us-east-1a" and r["type"] == "aws:ec2/subnet:Subnet")
    assert subnet["inputs"]["vpcId"] == UNKNOWN
    assert subnet["dependencies"]["vpcId"] == [vpc["urn"]]


def test_unknown_stack_lists_the_stacks_that_exist(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = invoke("plan", "--stack", "qa")
    assert result.exit_code == 2
    assert "unknown stack 'qa'" in result.stderr
    assert "stacks: dev, prod, staging" in result.stderr


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the real project to break on purpose (not a git checkout: the image source id is given)."""
    monkeypatch.setenv("PLATFORM_IMAGE_REVISION", "0123456")
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("Pulumi.yaml", "__main__.py", "components", "stacks", "inference_image"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copy / name)
    return copy


def test_config_error_names_file_key_value_and_exits_nonzero(project_copy):
    (project_copy / "stacks/Pulumi.bad.yaml").write_text(
        textwrap.dedent(
            """\
            config:
              platform:environment: bad
              platform:ha: true
              platform:aws: {region: us-east-1}
              platform:tags: {costCenter: x, owner: y}
              platform:network:
                availabilityZones: [us-east-1a]
            """
        )
    )
    result = invoke("plan", "--stack", "bad", "--project-dir", str(project_copy))
    assert result.exit_code == 2
    assert (
        'stacks/Pulumi.bad.yaml: platform:network.availabilityZones = ["us-east-1a"]: must list at least 2 '
        "availability zones" in " ".join(result.stderr.split())
    )


def test_error_text_reaches_the_terminal_verbatim(project_copy):
    """Messages hold brackets (key paths, lists); the terminal must not eat them as markup."""
    (project_copy / "stacks/Pulumi.bad.yaml").write_text(
        "config:\n  platform:environment: bad\n  platform:aws: {region: us-east-1}\n"
        "  platform:tags: {costCenter: x, owner: y}\n"
        "  platform:network: {availabilityZones: [us-east-1a, us-west-2a]}\n"
    )
    result = invoke("plan", "--stack", "bad", "--project-dir", str(project_copy))
    assert result.exit_code == 2
    assert 'platform:network.availabilityZones[1] = "us-west-2a"' in result.stderr


def test_program_failure_exits_1_and_points_at_the_line(project_copy):
    main = project_copy / "__main__.py"
    main.write_text(main.read_text() + "\nraise RuntimeError('boom')\n")
    result = invoke("plan", "--stack", "dev", "--project-dir", str(project_copy))
    assert result.exit_code == 1
    assert "RuntimeError: boom" in result.stderr
    assert "__main__.py:" in result.stderr


def test_secrets_are_masked_in_the_json_plan(tmp_path):
    """A secure config value reaches the program as a secret and never appears in the plan."""
    project = tmp_path / "secretive"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: secretive\nruntime: python\nstackConfigDir: stacks\n")
    (project / "stacks/Pulumi.dev.yaml").write_text(
        "config:\n  secretive:token:\n    secure: v1:AAAAciphertext\n  secretive:plain: visible\n"
    )
    (project / "__main__.py").write_text(
        textwrap.dedent(
            """\
            import pulumi
            import pulumi_aws as aws

            config = pulumi.Config()
            aws.ssm.Parameter("token", type="SecureString", value=config.require_secret("token"),
                              description=config.require("plain"))
            """
        )
    )
    out = tmp_path / "plan.json"
    result = invoke("plan", "--stack", "dev", "--format", "json", "-o", str(out), "--project-dir", str(project))
    assert result.exit_code == 0, result.output
    [parameter] = json.loads(out.read_text())["resources"]
    assert parameter["inputs"]["value"] == SECRET
    assert parameter["inputs"]["description"] == "visible"
    assert "ciphertext" not in out.read_text() and "placeholder" not in out.read_text()


def test_console_script_is_installed_and_runs():
    script = Path(sys.executable).parent / "platformctl"
    # The source id is given so that uncommitted image changes (a warning) don't matter here.
    env = {**os.environ, "PLATFORM_IMAGE_REVISION": "0123456"}
    result = subprocess.run([str(script), "plan", "--stack", "dev"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "Plan: stack dev:" in result.stdout
    assert result.stderr == ""  # no asyncio noise at interpreter exit

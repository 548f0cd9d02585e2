"""platformctl rollouts: which deployments canary, what a change would canary, and waiting for the result.

- ``list``: each deployment with a canary, its cluster, steps and how long a deploy waits for it;
- ``preview --compare-to BASE``: from two offline plans, which deployments a change would
  canary (an existing Rollout's pod template changed) or roll (a Deployment's), and why;
- ``wait``: after ``pulumi up``, polls each Rollout until it is Healthy (promoted) or Degraded
  (aborted and rolled back), and exits 1 on a rollback or a timeout. It reads the Rollout
  with plain ``kubectl get -o json``, no plugin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from platformctl.common import EXIT_CONFIG, fail, load_stack_config

app = typer.Typer(help="Canary rollouts (Argo Rollouts): list, preview a change, wait for the result.", no_args_is_help=True)

ROLLOUT = "kubernetes:argoproj.io/v1alpha1:Rollout"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
VERSION_LABEL = "app.kubernetes.io/version"
EXIT_ROLLED_BACK = 1


class Format(StrEnum):
    table = "table"
    json = "json"
    md = "md"


@dataclass(frozen=True)
class Canary:
    cluster: str  # eks | privateCloud
    namespace: str
    name: str
    steps: tuple[int, ...]
    timeout_seconds: int


def canaries(config) -> list[Canary]:
    from components.inference.rollouts import timeout_seconds

    return [Canary(d.target, config.inference.namespace, d.name, tuple(s.weight for s in d.canary.steps),
                   timeout_seconds(d.canary))
            for d in config.inference.deployments if d.canary is not None]  # fmt: skip


# --------------------------------------------------------------------------- preview


def _workloads(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in plan.get("resources", []) if r["type"] in (ROLLOUT, DEPLOYMENT)}


def _short(value: str) -> str:
    return value[:7] if len(value) == 40 and all(c in "0123456789abcdef" for c in value) else value


def template_changes(base: dict[str, Any], head: dict[str, Any]) -> list[str]:
    """What differs between two pod templates, in words: image version and build, each server
    setting (by name, old → new), anything else as "pod spec"."""
    if base == head:
        return []
    changes: list[str] = []
    old_labels, new_labels = base.get("metadata", {}).get("labels", {}), head.get("metadata", {}).get("labels", {})
    if old_labels.get(VERSION_LABEL) != new_labels.get(VERSION_LABEL):
        changes.append(f"image version {old_labels.get(VERSION_LABEL)} → {new_labels.get(VERSION_LABEL)}")
    from components.inference.manifests import IMAGE_TAG_ANNOTATION

    old_tag = base.get("metadata", {}).get("annotations", {}).get(IMAGE_TAG_ANNOTATION)
    new_tag = head.get("metadata", {}).get("annotations", {}).get(IMAGE_TAG_ANNOTATION)
    if old_tag != new_tag:
        changes.append(f"image build {old_tag} → {new_tag}")

    def env(template: dict[str, Any]) -> dict[str, str]:
        containers = template.get("spec", {}).get("containers") or [{}]
        return {e["name"]: e.get("value") for e in containers[0].get("env", [])}

    old_env, new_env = env(base), env(head)
    for name in sorted(set(old_env) | set(new_env)):
        if old_env.get(name) != new_env.get(name):
            changes.append(f"{name} {_short(str(old_env.get(name)))} → {_short(str(new_env.get(name)))}")

    def rest(template: dict[str, Any]) -> str:
        spec = json.loads(json.dumps(template.get("spec", {})))
        for container in spec.get("containers", []):
            container.pop("env", None)
        return json.dumps(spec, sort_keys=True)

    if rest(base) != rest(head):
        changes.append("pod spec")
    return changes or ["pod template metadata"]


def preview(head: dict[str, Any], base: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per model workload in ``head``: what applying it after ``base`` does to its pods."""
    before = _workloads(base) if base is not None else {}
    rows = []
    for name, resource in sorted(_workloads(head).items()):
        if not name.startswith("serving-"):
            continue
        inputs = resource["inputs"]
        row = {"resource": name, "deployment": inputs["metadata"]["name"], "namespace": inputs["metadata"].get("namespace")}
        canary = resource["type"] == ROLLOUT
        if canary:
            steps = [s["setWeight"] for s in inputs["spec"]["strategy"]["canary"]["steps"] if "setWeight" in s]
            row["steps"] = steps
        old = before.get(name)
        if old is None:
            # The same model under the other kind: its canary was just switched on or off.
            other = name.removesuffix("-rollout") + "-deployment" if canary else name.removesuffix("-deployment") + "-rollout"
            if other in before:
                row["change"] = ("becomes a Rollout: created at full weight, no canary this time" if canary
                                 else "becomes a Deployment: created at full weight, no canary")  # fmt: skip
            else:
                row["change"] = "new: created at full weight, no canary" if canary else "new"
            row["action"] = "create"
            row["why"] = []
        else:
            why = template_changes(old["inputs"]["spec"]["template"], inputs["spec"]["template"])
            row["why"] = why
            if not why:
                row["action"], row["change"] = "none", "no new pods"
            elif canary:
                row["action"], row["change"] = "canary", " → ".join(f"{w} %" for w in steps)
            else:
                row["action"], row["change"] = "rolling update", "all pods replaced, no analysis"
        rows.append(row)
    return rows


def markdown(stack: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"### Rollouts: {stack}", "", "| deployment | namespace | on apply | because |", "|---|---|---|---|"]
    for row in rows:
        action = {"canary": f"**canary** {row['change']}"}.get(row["action"], row["change"])
        lines.append(f"| {row['deployment']} | {row['namespace']} | {action} | {'; '.join(row['why']) or '-'} |")
    if not rows:
        lines.append("| - | - | no model deployments | - |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- wait


def verdict(rollout: dict[str, Any]) -> tuple[str, str]:
    """("healthy" | "degraded" | "progressing", message) of a Rollout as the API returns it.

    Until the controller has observed the current spec (``status.observedGeneration``, a string,
    equals ``metadata.generation``), an old Healthy says nothing about this deploy."""
    status = rollout.get("status") or {}
    message = status.get("message", "")
    if str(status.get("observedGeneration", "")) != str(rollout.get("metadata", {}).get("generation", "")):
        return "progressing", "waiting for the controller to observe the new spec"
    phase = status.get("phase", "")
    if status.get("abort") or phase == "Degraded":
        return "degraded", message or "aborted"
    if phase == "Healthy":
        return "healthy", message
    return "progressing", f"{phase}: {message}".strip(": ")


def _get(kubectl: str, kubeconfig: Path, canary: Canary) -> dict[str, Any]:
    result = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "-n", canary.namespace, "get", "rollout",
                             canary.name, "-o", "json"], capture_output=True, text=True, timeout=60)  # fmt: skip
    if result.returncode != 0:
        return {"status": {"phase": "Unknown", "message": f"kubectl: {result.stderr.strip()[:300]}"}}
    return json.loads(result.stdout)


def wait_for(items: list[tuple[Canary, Path]], kubectl: str, poll_seconds: float, clock=time.monotonic,
             sleep=time.sleep, echo=lambda line: None) -> dict[str, tuple[str, str]]:  # fmt: skip
    """Each canary's final (verdict, message); ``timeout`` when its deadline passes first."""
    start = clock()
    results: dict[str, tuple[str, str]] = {}
    pending = list(items)
    last: dict[str, str] = {}
    while pending:
        for canary, kubeconfig in list(pending):
            state, message = verdict(_get(kubectl, kubeconfig, canary))
            key = f"{canary.cluster}/{canary.namespace}/{canary.name}"
            if last.get(key) != f"{state}{message}":
                echo(f"{key}: {state} {message}".rstrip())
                last[key] = f"{state}{message}"
            if state != "progressing":
                results[key] = (state, message)
                pending.remove((canary, kubeconfig))
            elif clock() - start > canary.timeout_seconds:
                results[key] = ("timeout", f"still {message} after {canary.timeout_seconds} s")
                pending.remove((canary, kubeconfig))
        if pending:
            sleep(poll_seconds)
    return results


# --------------------------------------------------------------------------- commands


@app.command("list")
def list_command(
    stack: Annotated[str, typer.Option("--stack", "-s")] = "dev",
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    project_dir: Annotated[Path | None, typer.Option("--project-dir")] = None,
    stacks_dir: Annotated[Path | None, typer.Option("--stacks-dir")] = None,
) -> None:
    """The stack's deployments with a canary: cluster, steps, and how long a deploy waits."""
    found = canaries(load_stack_config(stack, project_dir, stacks_dir))
    if format is Format.json:
        typer.echo(json.dumps([{"cluster": c.cluster, "namespace": c.namespace, "name": c.name, "steps": list(c.steps),
                                "timeoutSeconds": c.timeout_seconds} for c in found], indent=2))  # fmt: skip
        return
    table = Table("cluster", "deployment", "steps", "deploy waits up to", title=f"{stack}: canaries")
    for c in found:
        table.add_row(c.cluster, f"{c.namespace}/{c.name}", " → ".join(f"{w} %" for w in c.steps), f"{c.timeout_seconds} s")
    Console(width=200).print(table)


@app.command("preview")
def preview_command(
    stack: Annotated[str, typer.Option("--stack", "-s")] = "dev",
    compare_to: Annotated[Path | None, typer.Option(help="The base's plan (`platformctl plan --format json`).")] = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    project_dir: Annotated[Path | None, typer.Option("--project-dir")] = None,
    stacks_dir: Annotated[Path | None, typer.Option("--stacks-dir")] = None,
) -> None:
    """Which deployments this change would canary (or roll), and why, from two offline plans."""
    from platformctl.common import load_plan

    base = None
    if compare_to is not None:
        try:
            base = json.loads(compare_to.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise fail(f"--compare-to {compare_to}: not a readable plan JSON ({exc})", EXIT_CONFIG) from None
    rows = preview(load_plan(stack, project_dir, stacks_dir).to_json(), base)
    if format is Format.json:
        typer.echo(json.dumps(rows, indent=2))
    elif format is Format.md:
        sys.stdout.write(markdown(stack, rows))
    else:
        table = Table("deployment", "on apply", "because", title=f"{stack}: rollouts")
        for row in rows:
            table.add_row(f"{row['namespace']}/{row['deployment']}", f"{row['action']}: {row['change']}", "; ".join(row["why"]))
        Console(width=200).print(table)


@app.command("wait")
def wait_command(
    stack: Annotated[str, typer.Option("--stack", "-s")] = "dev",
    kubeconfig: Annotated[list[str], typer.Option(
        "--kubeconfig", help="CLUSTER=PATH for each cluster with a canary (eks, privateCloud); repeatable.")] = [],  # noqa: B006
    kubectl: Annotated[str, typer.Option(help="kubectl to run.")] = "kubectl",
    poll_seconds: Annotated[float, typer.Option(min=0.0)] = 15.0,
    project_dir: Annotated[Path | None, typer.Option("--project-dir")] = None,
    stacks_dir: Annotated[Path | None, typer.Option("--stacks-dir")] = None,
) -> None:
    """After `pulumi up`: wait until every canary is promoted; exit 1 if one rolled back or timed out."""
    found = canaries(load_stack_config(stack, project_dir, stacks_dir))
    paths: dict[str, Path] = {}
    for item in kubeconfig:
        cluster, sep, path = item.partition("=")
        if not sep or cluster not in ("eks", "privateCloud"):
            raise fail(f"--kubeconfig {item}: expected eks=PATH or privateCloud=PATH", EXIT_CONFIG)
        paths[cluster] = Path(path)
    missing = sorted({c.cluster for c in found} - set(paths))
    if missing:
        raise fail(f"stack {stack} has canaries on {', '.join(missing)}: pass --kubeconfig {missing[0]}=PATH", EXIT_CONFIG)
    if not found:
        typer.echo(f"stack {stack}: no deployment has a canary; nothing to wait for")
        return
    results = wait_for([(c, paths[c.cluster]) for c in found], kubectl, poll_seconds, echo=typer.echo)
    failed = {key: value for key, value in results.items() if value[0] != "healthy"}
    for key, (state, message) in sorted(results.items()):
        typer.echo(f"{key}: {'promoted' if state == 'healthy' else 'ROLLED BACK' if state == 'degraded' else state.upper()}"
                   f"{': ' + message if message else ''}")  # fmt: skip
    if failed:
        raise typer.Exit(EXIT_ROLLED_BACK)

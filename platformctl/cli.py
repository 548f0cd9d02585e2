"""platformctl: the platform's operator CLI."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from components.mirror.runtime.cli import app as mirror_app
from platformctl.common import EXIT_POLICY, EXIT_PROGRAM, fail, load_plan
from platformctl.cost import app as cost_app
from platformctl.failover import app as failover_app
from platformctl.images import app as image_app
from platformctl.rollouts import app as rollouts_app
from platformctl.vpn import app as vpn_app

app = typer.Typer(
    help="Operate the GPU inference platform: offline plans, cost estimates, the model mirror, the config reference.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="The stack configuration reference.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(mirror_app, name="mirror")
app.add_typer(cost_app, name="cost")
app.add_typer(failover_app, name="failover")
app.add_typer(image_app, name="image")
app.add_typer(rollouts_app, name="rollouts")
app.add_typer(vpn_app, name="vpn")



class PlanFormat(StrEnum):
    text = "text"
    json = "json"


@app.command()
def plan(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack to plan (stacks/Pulumi.<stack>.yaml).")] = "dev",
    format: Annotated[PlanFormat, typer.Option("--format", "-f", help="text: tree; json: full plan.")] = PlanFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")] = None,
    project_dir: Annotated[
        Path | None, typer.Option("--project-dir", help="Directory of Pulumi.yaml (default: nearest at or above cwd).")
    ] = None,
    stacks_dir: Annotated[
        Path | None,
        typer.Option("--stacks-dir", help="Read Pulumi.<stack>.yaml from here instead (e.g. examples/stacks)."),
    ] = None,
    policy_pack: Annotated[
        Path | None,
        typer.Option("--policy-pack", help="Also run this policy pack over the plan (as `pulumi preview --policy-pack`)."),
    ] = None,
) -> None:
    """Offline plan of a stack: every resource the program declares, with no cloud and no CLI."""
    from platformctl.render import render_text

    result = load_plan(stack, project_dir, stacks_dir)
    if policy_pack is not None:
        _enforce_policies(policy_pack, result, stack)
        return
    if format is PlanFormat.json:
        text = json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
        if output:
            output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return
    if output:
        with output.open("w", encoding="utf-8") as handle:
            render_text(result, Console(file=handle, width=160, no_color=True))
    else:
        render_text(result, Console(width=max(Console().width, 120)))


def _enforce_policies(pack_dir: Path, result, stack: str) -> None:
    """Violations grouped by enforcement and severity, each with the resource and the fix."""
    from platformctl.policy import PolicyPackError, check_plan

    try:
        violations = check_plan(pack_dir.resolve(), result)
    except PolicyPackError as exc:
        raise fail(str(exc), EXIT_PROGRAM) from None
    out = Console(width=max(Console().width, 160), soft_wrap=True)
    mandatory = [v for v in violations if v.enforcement == "mandatory"]
    for severity in ("critical", "high", "medium", "low", ""):
        group = sorted((v for v in violations if v.severity == severity),
                       key=lambda v: (v.enforcement != "mandatory", v.policy, v.urn))  # fmt: skip
        if not group:
            continue
        out.print(f"[bold]{severity or 'unspecified'}[/] ({len(group)})")
        for v in group:
            resource = v.urn.rsplit("::", 1)[-1] if v.urn else "(stack)"
            message = v.message.split("\n", 1)[-1]
            out.print(f"  {v.enforcement}: {v.policy}: {escape(resource)}: {escape(message)}", highlight=False)
            if v.remediation and v.enforcement == "mandatory":
                out.print(f"      fix: {escape(v.remediation)}", highlight=False)
    out.print(f"policy pack {pack_dir}: stack {stack}: {len(mandatory)} mandatory, "
              f"{len(violations) - len(mandatory)} advisory")  # fmt: skip
    if mandatory:
        raise typer.Exit(EXIT_POLICY)


@config_app.command("reference")
def config_reference() -> None:
    """Print the config reference (Markdown) generated from the pydantic models."""
    from platformctl.reference import render_markdown

    sys.stdout.write(render_markdown())


@config_app.command("pulumi-yaml")
def config_pulumi_yaml() -> None:
    """Print the `config:` block Pulumi.yaml should hold, generated from the models."""
    from platformctl.reference import render_pulumi_config_block

    sys.stdout.write(render_pulumi_config_block())


def main() -> None:
    app()


if __name__ == "__main__":
    main()

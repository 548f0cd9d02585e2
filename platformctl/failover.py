"""platformctl failover: render a node of the failover pair (on-premises hosts, or to review AWS's)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from platformctl.common import EXIT_CONFIG, fail, load_stack_config

app = typer.Typer(help="The Keepalived failover pair protecting the Redis session store.", no_args_is_help=True)


class Site(StrEnum):
    aws = "aws"
    onPrem = "onPrem"


class Node(StrEnum):
    a = "a"
    b = "b"


@app.command("render")
def render_command(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack whose platform:failover to render.")] = "dev",
    node: Annotated[Node, typer.Option("--node", "-n", help="Which node of the pair.")] = Node.a,
    site: Annotated[Site | None, typer.Option(
        "--site", help="onPrem (plain L2 VIP, no AWS calls) or aws. Default: onPrem when failover.onPrem is set.")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o", help="Write the files under this directory at their paths on the node, not to stdout.")] = None,
    project_dir: Annotated[Path | None, typer.Option("--project-dir", help="Directory of Pulumi.yaml.")] = None,
    stacks_dir: Annotated[Path | None, typer.Option("--stacks-dir", help="Read Pulumi.<stack>.yaml from here.")] = None,
) -> None:
    """Print a node's keepalived.conf, agent settings, Redis include and agent script.

    Secrets are never rendered: the agent reads the Redis password from a file the host
    provides (/etc/platform-failover/redis.pass; on AWS it comes from SSM at boot).
    On AWS the interface and Elastic IP ids exist only after `pulumi up`: they render as null
    here, and cloud-init writes the real ones.
    """
    from components.failover.render import agent_settings, aws_layout, node_files, on_prem_layout
    from components.tagging import resource_name
    from platformctl.project import find_project

    config = load_stack_config(stack, project_dir, stacks_dir)
    if config.failover is None:
        raise fail(f"stack {stack} has no platform:failover: there is no pair to render", EXIT_CONFIG)
    chosen = site or (Site.onPrem if config.failover.on_prem is not None else Site.aws)
    if chosen is Site.onPrem and config.failover.on_prem is None:
        raise fail(f"stack {stack}: platform:failover.onPrem is not set (interface, nodeAddresses, vip)", EXIT_CONFIG)
    layout = on_prem_layout(config.failover) if chosen is Site.onPrem else aws_layout(config.failover, config.network)
    pair = resource_name(find_project(project_dir).name, config.environment, "session-store")
    settings = agent_settings(layout, node.value, config.failover, pair, region=config.aws.region)
    files = node_files(layout, node.value, config.failover, pair, settings)
    if output_dir is None:
        for path, content in files.items():
            typer.echo(f"# ==> {path} <==")
            typer.echo(content, nl=not content.endswith("\n"))
        return
    for path, content in files.items():
        target = output_dir / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        if path.endswith(".py"):
            target.chmod(0o755)
    typer.echo(f"wrote {len(files)} files for node {node.value} ({chosen.value}) under {output_dir}")

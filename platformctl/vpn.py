"""platformctl vpn: render the on-prem gateway of the site-to-site VPN (strongSwan, FRR, interfaces)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from platformctl.common import EXIT_CONFIG, fail, load_stack_config

app = typer.Typer(help="The site-to-site VPN to the private cloud.", no_args_is_help=True)


def read_outputs(stack: str, outputs: Path | None, project_dir: Path) -> dict[str, Any]:
    """The stack's outputs with secrets shown: from ``outputs`` (a file, or - for stdin) or the Pulumi CLI."""
    if outputs is not None:
        source = "stdin" if str(outputs) == "-" else str(outputs)
        try:
            text = sys.stdin.read() if str(outputs) == "-" else outputs.read_text(encoding="utf-8")
            data = json.loads(text)
        except OSError as exc:
            raise fail(f"--outputs {source}: cannot read it ({exc.strerror})", EXIT_CONFIG) from None
        except json.JSONDecodeError as exc:
            raise fail(f"--outputs {source}: not JSON ({exc.msg} at line {exc.lineno}); expected the output of "
                       f"`pulumi stack output --stack {stack} --json --show-secrets`", EXIT_CONFIG) from None  # fmt: skip
        if not isinstance(data, dict):
            raise fail(f"--outputs {source}: expected a JSON object of stack outputs", EXIT_CONFIG)
        return data
    if shutil.which("pulumi") is None:
        raise fail(f"no --outputs given and no pulumi CLI here: run `pulumi stack output --stack {stack} --json "
                   "--show-secrets > outputs.json` where the stack is deployed, then pass --outputs outputs.json "
                   "(and delete that file afterwards: it holds the pre-shared keys)", EXIT_CONFIG)  # fmt: skip
    result = subprocess.run(["pulumi", "stack", "output", "--stack", stack, "--json", "--show-secrets"],
                            cwd=project_dir, capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        raise fail(f"`pulumi stack output --stack {stack}` failed: {result.stderr.strip()}", EXIT_CONFIG)
    return json.loads(result.stdout)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False


def write_files(files: dict[str, str], output_dir: Path, secret_files: frozenset[str],
                executables: frozenset[str]) -> list[str]:  # fmt: skip
    """Write each file atomically (a crash leaves the old file or the new one, never half of one).

    Secret files are created 0600 from the start, never world-readable for an instant.
    Returns the paths whose content changed.
    """
    changed = []
    for relative, content in files.items():
        target = output_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and target.read_text(encoding="utf-8") == content:
            continue
        mode = 0o600 if relative in secret_files else 0o755 if relative in executables else 0o644
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            os.fchmod(handle, mode)
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(content)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        changed.append(relative)
    return changed


@app.command("onprem-config")
def onprem_config(
    stack: Annotated[str, typer.Option("--stack", "-s", help="Stack whose platform:vpn to render.")] = "dev",
    outputs: Annotated[Path | None, typer.Option(
        "--outputs", help="JSON of `pulumi stack output --json --show-secrets` (- for stdin). "
                          "Default: ask the pulumi CLI.")] = None,  # fmt: skip
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o", help="Write the files under this directory (e.g. /etc on the gateway), secrets included. "
                                   "Default: print them, without secrets.")] = None,  # fmt: skip
    no_secrets: Annotated[bool, typer.Option("--no-secrets", help="Leave out the pre-shared keys file.")] = False,
    project_dir: Annotated[Path | None, typer.Option("--project-dir", help="Directory of Pulumi.yaml.")] = None,
    stacks_dir: Annotated[Path | None, typer.Option("--stacks-dir", help="Read Pulumi.<stack>.yaml from here.")] = None,
) -> None:
    """Render the on-prem VPN gateway: strongSwan (both tunnels, route-based), FRR, XFRM interfaces.

    The tunnels' AWS addresses and pre-shared keys exist only once `pulumi up` has run,
    so they come from the stack's outputs. Secrets are never printed and never written
    inside this repository.
    """
    from components.vpn.render import EXECUTABLES, SECRET_FILES, OutputsError, gateway, onprem_files
    from platformctl.project import find_project

    config = load_stack_config(stack, project_dir, stacks_dir)
    if config.vpn is None:
        raise fail(f"stack {stack} has no platform:vpn: there is no gateway to render", EXIT_CONFIG)
    project = find_project(project_dir)
    with_secrets = output_dir is not None and not no_secrets
    if with_secrets and _inside(output_dir, project.root):
        raise fail(f"--output-dir {output_dir} is inside the repository ({project.root}): the pre-shared keys must "
                   "never land there; write to the gateway's /etc (or use --no-secrets)", EXIT_CONFIG)  # fmt: skip
    try:
        gw = gateway(config, read_outputs(stack, outputs, project.root), with_secrets=with_secrets)
    except OutputsError as exc:
        raise fail(f"stack {stack}: {exc}", EXIT_CONFIG) from None
    files = onprem_files(gw, with_secrets=with_secrets)
    if output_dir is None:
        for path, content in files.items():
            typer.echo(f"# ==> /etc/{path} <==")
            typer.echo(content, nl=not content.endswith("\n"))
        typer.echo("# (pre-shared keys not shown: render with --output-dir to write them, mode 0600)")
        return
    changed = write_files(files, output_dir, SECRET_FILES, EXECUTABLES)
    typer.echo(f"wrote {len(changed)} of {len(files)} files under {output_dir} ({len(files) - len(changed)} unchanged)")
    for path in changed:
        typer.echo(f"  {path}")

"""What the CLI's commands share: the error console, exit codes, loading a stack's offline plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)

EXIT_CONFIG = 2  # the input (stack name, stack file) is wrong
EXIT_PROGRAM = 1  # the program itself failed
EXIT_POLICY = 3  # a mandatory policy is violated


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_plan(stack: str, project_dir: Path | None = None, stacks_dir: Path | None = None):
    """The offline plan of ``stack``; a bad stack or config exits 2, a failing program 1."""
    from components.config import ConfigError
    from platformctl.offline import PlanError, run_offline_plan
    from platformctl.project import ProjectError, find_project

    try:
        project = find_project(project_dir)
        if stacks_dir is not None:
            project = dataclasses.replace(project, stack_config_dir=stacks_dir.resolve())
        return run_offline_plan(project, stack)
    except (ProjectError, ConfigError) as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    except PlanError as exc:
        raise fail(f"the program failed while planning stack {stack}: {exc}", EXIT_PROGRAM) from None


def load_stack_config(stack: str, project_dir: Path | None = None, stacks_dir: Path | None = None):
    """The validated PlatformConfig of ``stack`` (no plan run); a bad stack or config exits 2."""
    from components.config import ConfigError, parse_config
    from platformctl.project import ProjectError, find_project, read_stack_config

    try:
        project = find_project(project_dir)
        if stacks_dir is not None:
            project = dataclasses.replace(project, stack_config_dir=stacks_dir.resolve())
        raw, secret_keys = read_stack_config(project, stack)
        return parse_config(raw, secret_keys, project.relative(project.stack_file(stack)))
    except (ProjectError, ConfigError) as exc:
        raise fail(str(exc), EXIT_CONFIG) from None

from __future__ import annotations

from pathlib import Path

import pytest

from platformctl.offline import Plan, run_offline_plan
from platformctl.project import Project, load_project

ROOT = Path(__file__).resolve().parent.parent
STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))


@pytest.fixture(scope="session")
def project() -> Project:
    return load_project(ROOT)


@pytest.fixture(scope="session")
def plans(project: Project) -> dict[str, Plan]:
    """The offline plan of every stack, run once per test session."""
    return {stack: run_offline_plan(project, stack) for stack in STACKS}

"""Dependency sets stay apart: the Pulumi program never pulls torch."""

from __future__ import annotations

import tomllib

from .conftest import ROOT


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_program_requirements_are_repeated_in_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dependencies = pyproject["project"]["dependencies"]
    for requirement in _requirements():
        assert requirement in dependencies, f"{requirement} is in requirements.txt but not pyproject.toml"


def test_program_requirements_have_lower_bounds_and_no_ml_stack():
    for requirement in _requirements():
        assert ">=" in requirement, requirement
        name = requirement.split(">")[0].split("<")[0].split("=")[0].lower()
        assert name not in {"torch", "transformers", "huggingface-hub"}, requirement


def test_console_script_points_at_the_cli():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["platformctl"] == "platformctl.cli:main"

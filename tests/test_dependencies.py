"""Dependency sets stay apart: the Pulumi program never pulls torch."""

from __future__ import annotations

import tomllib
from pathlib import Path

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


def test_every_module_the_program_imports_is_a_declared_requirement():
    """What `pulumi install` installs (requirements.txt) covers every import of the program."""
    import ast
    import re
    import sys
    from importlib.metadata import packages_distributions

    def normalized(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {normalized(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in _requirements()}
    distributions = packages_distributions()

    def module_file(name: str) -> Path | None:
        base = ROOT / Path(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    # What `pulumi up` runs: __main__.py and every repo module it reaches (operator tools and
    # image runtimes under components/ have their own requirements and are not reached).
    imported: set[str] = set()
    seen: set[Path] = set()
    queue = [ROOT / "__main__.py"]
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] == "components":
                    parts = name.split(".")
                    for depth in range(1, len(parts) + 1):  # packages' __init__ run too
                        found = module_file(".".join(parts[:depth]))
                        if found is not None:
                            queue.append(found)
                else:
                    imported.add(name.split(".")[0])
    assert ROOT / "components" / "cost" / "component.py" in seen  # the walk follows the program
    assert ROOT / "components" / "cost" / "report.py" not in seen
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert "pulumi_docker_build" in third_party  # the check sees real imports
    missing = {module: distributions.get(module) for module in third_party
               if not {normalized(d) for d in distributions.get(module, [module])} & declared}  # fmt: skip
    assert not missing, f"imported by the program but not in requirements.txt: {missing}"

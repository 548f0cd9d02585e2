"""What a runtime's code imports, and which distributions of its image's lock provide it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from packaging.utils import canonicalize_name


def external_modules(package_dir: Path) -> set[str]:
    """Top-level modules imported anywhere in a package (function-local imports included),
    less the standard library and the package itself."""
    own = {package_dir.name}
    found: set[str] = set()
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in own and name not in sys.stdlib_module_names and name != "__future__"}


def lock_of(text: str) -> dict[str, str]:
    """``name==version`` lines (comments, extras and blank lines aside) as canonical name -> version."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(3)
    return pins


IMPORT_EVERYTHING = (
    "import importlib, pkgutil, sys\n"
    "package = importlib.import_module(sys.argv[1])\n"
    "for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + '.'):\n"
    "    if not m.name.endswith('.__main__'):  # that one runs the CLI\n"
    "        importlib.import_module(m.name)\n"
    "for name in sys.argv[2:]:\n"
    "    importlib.import_module(name)\n"
)


def import_everything_argv(package: str, package_dir: Path, then: str = "") -> list[str]:
    """A ``python -c`` command importing every module of ``package`` and every module its code
    imports (function-local imports too), then running ``then``: what the image must hold."""
    return ["python", "-c", IMPORT_EVERYTHING + then, package, *sorted(external_modules(package_dir))]

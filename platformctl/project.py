"""Reading a Pulumi project and its stack files the way the Pulumi CLI does, offline."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: What the offline plan substitutes for an encrypted value: ciphertext cannot be
#: decrypted without the stack's secrets provider, and the plan never needs it.
SECRET_PLACEHOLDER = "offline-plan-secret-placeholder"


class ProjectError(Exception):
    """The project or stack cannot be read; ``str()`` is the user-facing message."""


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    main: Path
    stack_config_dir: Path
    declared_config: dict[str, Any] = field(default_factory=dict)

    def stack_file(self, stack: str) -> Path:
        return self.stack_config_dir / f"Pulumi.{stack}.yaml"

    def stacks(self) -> list[str]:
        return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in self.stack_config_dir.glob("Pulumi.*.yaml"))

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def find_project(start: Path | None = None) -> Project:
    """The nearest ``Pulumi.yaml`` at or above ``start`` (as the Pulumi CLI looks)."""
    here = (start or Path.cwd()).resolve()
    for directory in [here, *here.parents]:
        candidate = directory / "Pulumi.yaml"
        if candidate.is_file():
            return load_project(directory)
    raise ProjectError(f"no Pulumi.yaml in {here} or any parent directory")


def load_project(root: Path) -> Project:
    path = root / "Pulumi.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProjectError(f"{path}: cannot read the project file: {exc}") from exc
    if not isinstance(data, dict) or not data.get("name"):
        raise ProjectError(f"{path}: a project file needs a 'name'")
    main = root / (data.get("main") or ".")
    if main.is_dir():
        main = main / "__main__.py"
    return Project(
        root=root,
        name=str(data["name"]),
        main=main,
        stack_config_dir=root / (data.get("stackConfigDir") or "."),
        declared_config=data.get("config") or {},
    )


def engine_text(value: Any) -> str:
    """A config value as the engine hands it to the program: text, JSON for objects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _strip_secure(value: Any) -> tuple[Any, bool]:
    """Replace ``{secure: ...}`` leaves with the placeholder; report whether any were found."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SECRET_PLACEHOLDER, True
        found = False
        out = {}
        for key, item in value.items():
            out[key], item_found = _strip_secure(item)
            found |= item_found
        return out, found
    if isinstance(value, list):
        items = [_strip_secure(item) for item in value]
        return [item for item, _ in items], any(found for _, found in items)
    return value, False


def read_stack_config(project: Project, stack: str) -> tuple[dict[str, str], set[str]]:
    """Engine-style config of ``stack``: ``{"ns:key": text}`` and the keys stored encrypted.

    Mirrors the CLI: project-level ``default``/``value`` entries of ``Pulumi.yaml``
    apply where the stack sets nothing; a key with a ``secure:`` value anywhere
    inside is a secret key (the CLI decrypts it; offline it holds a placeholder).
    """
    path = project.stack_file(stack)
    if not path.is_file():
        known = ", ".join(project.stacks()) or "none"
        raise ProjectError(
            f"unknown stack {stack!r}: {project.relative(path)} does not exist (stacks: {known})"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProjectError(f"{project.relative(path)}: not valid YAML: {exc}") from exc
    stack_config = data.get("config") or {}
    if not isinstance(stack_config, dict):
        raise ProjectError(f"{project.relative(path)}: 'config' must be a mapping of keys to values")

    config: dict[str, str] = {}
    secret_keys: set[str] = set()
    for key, declaration in project.declared_config.items():
        full_key = key if ":" in key else f"{project.name}:{key}"
        if isinstance(declaration, dict):
            for attribute in ("value", "default"):
                if attribute in declaration:
                    config[full_key] = engine_text(declaration[attribute])
        else:
            config[full_key] = engine_text(declaration)
    for key, value in stack_config.items():
        full_key = key if ":" in str(key) else f"{project.name}:{key}"
        plain, had_secret = _strip_secure(value)
        if had_secret:
            secret_keys.add(full_key)
        config[full_key] = engine_text(plain)
    return config, secret_keys

"""The config reference, generated from the pydantic models (docs/config.md, Pulumi.yaml)."""

from __future__ import annotations

import ipaddress
import json
from types import NoneType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from components.config import NAMESPACE, PlatformConfig, SecretMarker, _field_is_secret

HEADER = """# Stack configuration reference

Generated from `components/config.py` by `platformctl config reference` (`make docs`);
`tests/test_config_reference.py` fails when this file and the models disagree.

Every key lives in the `{ns}:` namespace of a stack file (`stacks/Pulumi.<stack>.yaml`).
Object keys are written as YAML mappings; nested keys are shown as dotted paths, the way
`pulumi config set --path {ns}:network.flowLogs.retentionDays 90` addresses them.
Keys marked **secret** must be set with `pulumi config set --secret`; a plaintext value is
a config error. The program validates the whole tree before it declares any resource.
"""


def type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        name = type_name(base)
        return f"{name} (secret)" if any(isinstance(m, SecretMarker) for m in metadata) else name
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in get_args(annotation))
    if origin is Union:
        args = [a for a in get_args(annotation) if a is not NoneType]
        names = " or ".join(type_name(a) for a in args)
        return names + (" or null" if len(args) < len(get_args(annotation)) else "")
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if origin is dict:
        return f"map of {type_name(get_args(annotation)[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return {
        str: "string",
        int: "integer",
        bool: "boolean",
        float: "number",
        ipaddress.IPv4Network: "IPv4 CIDR",
        SecretStr: "string",
    }.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return PydanticUndefined
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, ipaddress.IPv4Network):
        return str(value)
    return value


def _default_text(field: FieldInfo) -> str:
    value = _default(field)
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, dict) and value and all(isinstance(v, (dict, list, str, int, bool, type(None))) for v in value.values()):
        return "see below" if any(isinstance(v, dict) for v in value.values()) else f"`{json.dumps(value)}`"
    return f"`{json.dumps(value)}`"


def _nested_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{field.alias or name}"
        type_text = type_name(field.annotation) + (" (secret)" if _field_is_secret(field) and "secret" not in type_name(field.annotation) else "")
        nested = _nested_model(field.annotation)
        default = _default_text(field) if nested is None else ("**required**" if _default(field) is PydanticUndefined else "(nested defaults)")
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append((key, type_text, default, description))
        if nested is not None:
            rows.extend(_rows(nested, key))
    return rows


def render_markdown(model: type[BaseModel] = PlatformConfig) -> str:
    parts = [HEADER.format(ns=NAMESPACE)]
    for name, field in model.model_fields.items():
        key = f"{NAMESPACE}:{field.alias or name}"
        parts.append(f"\n## `{key}`\n\n{field.description}\n")
        nested = _nested_model(field.annotation)
        parts.append("\n| key | type | default | meaning |\n|---|---|---|---|\n")
        if nested is None:
            default = _default_text(field)
            parts.append(f"| `{key}` | {type_name(field.annotation)} | {default} | {field.description} |\n")
        else:
            for row in _rows(nested, key):
                parts.append("| `{}` | {} | {} | {} |\n".format(*row))
    return "".join(parts)


def _pulumi_type(annotation: Any) -> dict[str, Any]:
    """Pulumi's project schema knows string, integer, boolean and array (of those)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _pulumi_type(get_args(annotation)[0])
    simple = {str: "string", int: "integer", bool: "boolean", SecretStr: "string"}
    if annotation in simple:
        return {"type": simple[annotation]}
    if origin is list:
        items = _pulumi_type(get_args(annotation)[0])
        return {"type": "array", "items": items} if items else {}
    return {}


def pulumi_config_block(model: type[BaseModel] = PlatformConfig) -> dict[str, Any]:
    """The ``config:`` mapping for Pulumi.yaml: every top-level key, typed where Pulumi can type it."""
    block: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        entry: dict[str, Any] = dict(_pulumi_type(field.annotation))
        if not entry:
            entry["description"] = f"Object: {field.description} Nested keys: docs/config.md."
        else:
            entry["description"] = field.description
        if _field_is_secret(field):
            entry["secret"] = True
        default = _default(field)
        if default is not PydanticUndefined:
            # Pulumi requires every declared key without a default to be set by each
            # stack; objects default to {} so the models' nested defaults apply.
            entry["default"] = {} if _nested_model(field.annotation) is not None else default
        block[f"{NAMESPACE}:{field.alias or name}"] = entry
    return block


def render_pulumi_config_block(model: type[BaseModel] = PlatformConfig) -> str:
    return yaml.safe_dump({"config": pulumi_config_block(model)}, sort_keys=False, width=100)


def write_pulumi_yaml(path: str) -> None:
    """Replace the ``config:`` block (the file's last section) with the generated one."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, marker, _ = text.partition("\nconfig:\n")
    if not marker:
        raise SystemExit(f"{path}: no top-level 'config:' block to replace")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(head + "\n" + render_pulumi_config_block())


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--write-pulumi-yaml":
        write_pulumi_yaml(sys.argv[2])
    else:
        raise SystemExit("usage: python -m platformctl.reference --write-pulumi-yaml Pulumi.yaml")

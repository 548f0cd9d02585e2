"""The config reference and Pulumi.yaml cannot drift from the models."""

from __future__ import annotations

import pytest

import yaml

from components.config import PlatformConfig
from platformctl.reference import pulumi_config_block, render_markdown, replace_between_markers

from .conftest import ROOT, STACKS


def _field_paths(model, prefix):
    from components.config import nested_model

    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        yield path
        nested = nested_model(field.annotation)
        if nested is not None:
            yield from _field_paths(nested, path)


def test_readme_reference_is_generated_from_the_models():
    text = (ROOT / "README.md").read_text()
    assert replace_between_markers(text, render_markdown()) == text, "run `make docs`"


def test_reference_documents_every_key():
    text = render_markdown()
    for name, field in PlatformConfig.model_fields.items():
        assert f"`platform:{field.alias or name}`" in text
    nested = [p for p in _field_paths(PlatformConfig, "platform:x")]
    assert len(nested) > 15
    for path in _field_paths(PlatformConfig.model_fields["network"].annotation, "platform:network"):
        assert f"`{path}`" in text


def test_pulumi_yaml_config_block_matches_the_models():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["config"] == pulumi_config_block(), "run `make docs`"


def test_pulumi_yaml_obeys_the_project_rules_the_cli_enforces():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "platform"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert project["stackConfigDir"] == "stacks"
    for key, declaration in project["config"].items():
        # Typed keys must be namespaced by the project; types are Pulumi's four.
        assert key.startswith(project["name"] + ":"), key
        assert declaration["description"], key
        if "type" in declaration:
            assert declaration["type"] in {"string", "integer", "boolean", "array"}
            if "default" in declaration:
                expected = {"string": str, "integer": int, "boolean": bool, "array": list}[declaration["type"]]
                assert isinstance(declaration["default"], expected), key


def test_every_stack_sets_each_key_pulumi_requires():
    """Pulumi refuses a stack that lacks a declared key with no default."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    required = [k for k, d in project["config"].items() if "default" not in d and "value" not in d]
    assert required == ["platform:environment", "platform:aws", "platform:tags"]
    for stack in STACKS:
        config = yaml.safe_load((ROOT / f"stacks/Pulumi.{stack}.yaml").read_text())["config"]
        for key in required:
            assert key in config, f"stacks/Pulumi.{stack}.yaml lacks {key}"


def test_a_failed_render_leaves_the_readme_whole(tmp_path, monkeypatch):
    """`make docs` once emptied README.md when rendering raised after the file was opened for writing."""
    from platformctl import reference

    readme = tmp_path / "README.md"
    readme.write_text("intro\n" + reference.BEGIN_MARKER + "\nold\n" + reference.END_MARKER + "\ntail\n")
    before = readme.read_text()

    def broken() -> str:
        raise TypeError("Object of type IPv4Network is not JSON serializable")

    monkeypatch.setattr(reference, "render_markdown", broken)
    with pytest.raises(TypeError):
        reference.write_readme(str(readme))
    assert readme.read_text() == before and list(tmp_path.iterdir()) == [readme]

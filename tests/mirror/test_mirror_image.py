"""The mirror image's Dockerfile and pins; the inference server downloading through the mirror."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx

from components.mirror.runtime.sync import sync_revision
from tests.inference.conftest import MODEL, start_server

from ..conftest import ROOT
from .conftest import COMMIT_1

MIRROR = ROOT / "components" / "mirror"
HADOLINT = Path(sys.executable).parent / "hadolint"


def test_mirror_dockerfile_passes_hadolint_runs_non_root_and_carries_the_lambda_adapter():
    result = subprocess.run([str(HADOLINT), "--no-color", str(MIRROR / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (MIRROR / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    assert "USER 10001:10001" in final and "HEALTHCHECK" in final
    assert "COPY --from=lambda-adapter /lambda-adapter /opt/extensions/lambda-adapter" in final
    assert "public.ecr.aws/awsguru/aws-lambda-adapter:0.9.1" in text  # pinned, never :latest
    assert "COPY runtime /app/model_mirror" in final


def test_mirror_requirements_are_pinned_to_what_the_tests_ran_with():
    pins = [line.strip() for line in (MIRROR / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip
    assert pins and all("==" in pin for pin in pins)
    for pin in pins:
        name, wanted = pin.split("==")
        assert version(name) == wanted, f"{name}: tested with {version(name)}, image pins {wanted}"


def test_the_runtime_imports_nothing_from_pulumi_or_the_rest_of_the_repo():
    """It is copied into the image alone as the package model_mirror."""
    import ast

    for path in (MIRROR / "runtime").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith(("components", "pulumi", "platformctl")), f"{path.name}: {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("components", "pulumi")) for a in node.names), path.name


def test_the_inference_server_loads_a_pinned_revision_through_the_mirror(store, serve, tmp_path, demo_files_hub):
    hub, upstream_url = demo_files_hub
    sync_revision(store, MODEL, COMMIT_1, upstream=upstream_url)
    mirror = serve()
    cache = tmp_path / "cache"
    server = start_server(None, tmp_path, "--model-id", MODEL, "--revision", COMMIT_1, "--cache-dir", str(cache),
                          auth=False, env={"HF_ENDPOINT": mirror})  # fmt: skip
    try:
        server.wait_ready()
        body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=30).status_code == 200
    finally:
        server.stop()
    assert (cache / "manifests" / "models--platform--demo-llama-tiny" / f"{COMMIT_1}.json").is_file()

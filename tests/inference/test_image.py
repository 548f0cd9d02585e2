"""The Dockerfile, checked by hadolint and for what the image must promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

from ..conftest import ROOT

IMAGE = ROOT / "inference_image"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True)


def test_dockerfile_passes_hadolint():
    result = _hadolint(IMAGE / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nRUN cd /tmp && sudo make\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def _final_stage(text: str) -> str:
    return text[text.rindex("\nFROM ") :]


def test_runtime_stage_is_slim_non_root_healthchecked_and_labelled():
    text = (IMAGE / "Dockerfile").read_text()
    assert text.count("\nFROM ") >= 2  # multi-stage
    final = _final_stage(text)
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "HEALTHCHECK" in final and "/healthz" in final
    for label in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{label}=" in final
    # No compilers or build tools reach the final image; its one pip install takes the prebuilt
    # wheel with no index (tests/images checks the built image itself).
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final, tool
    installs = re.findall(r"pip install ([^\n&]*)", final)
    assert installs == ["--no-deps --no-index --no-cache-dir /tmp/server-wheel/*.whl \\"], installs
    assert "COPY --from=server-wheel /wheels /tmp/server-wheel" in final
    assert re.search(r"^ARG PYTHON_IMAGE=python:[\d.]+-slim-\w+$", text, re.M)  # slim base, pinned version


def test_dependencies_are_pinned_and_locked():
    requirements = [
        line for line in (IMAGE / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert all(re.match(r"^[A-Za-z0-9_.\-\[\]]+==\S+$", line) for line in requirements), requirements
    locked = {
        canonicalize_name(line.split("==")[0])
        for line in (IMAGE / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for line in requirements:
        name = canonicalize_name(re.sub(r"\[.*\]", "", line.split("==")[0]))
        assert name == "torch" or name in locked, f"{name} is not in constraints.txt"
    assert "torch" not in locked  # pinned in requirements; CPU and CUDA builds differ


def test_the_version_has_one_source():
    version = (IMAGE / "VERSION").read_text().strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    from importlib.metadata import version as installed

    assert installed("inference-server") == version
    assert 'version = { file = "VERSION" }' in (IMAGE / "pyproject.toml").read_text()

"""The images, built once per session with the same code as ``make image`` (layer cache reused)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from platformctl import images
from tests.loopback import free_port

from tests.mirror.conftest import aws_env, model_files, s3_endpoint  # noqa: F401  (fixtures)

from ..conftest import ROOT
from .containers import Container


def _no_builder(reason: str) -> None:
    """Without a builder the smoke tests cannot run: a failure in CI, a visible skip elsewhere."""
    message = f"cannot build or start the images here: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must build them: make installs buildah)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def engine() -> str:
    try:
        engine = images.detect_engine()
    except images.ImageBuildError as exc:
        _no_builder(str(exc))
    if engine == "buildah" and os.geteuid() != 0:
        _no_builder("buildah with chroot isolation and vfs storage runs as root here (rootless needs user namespaces)")
    return engine


def _built(engine: str, name: str) -> images.BuiltImage:
    started = time.monotonic()
    try:
        built = images.build(name, ROOT, python=sys.executable, log=lambda line: print(f"[{name}] {line}"))
    except images.ImageBuildError as exc:
        pytest.fail(f"make image ({name}) failed: {exc}")
    print(f"[{name}] built {built.ref} in {time.monotonic() - started:.0f} s")
    return built


@pytest.fixture(scope="session")
def inference_image(engine: str) -> images.BuiltImage:
    return _built(engine, "inference")


@pytest.fixture(scope="session")
def mirror_image(engine: str) -> images.BuiltImage:
    return _built(engine, "mirror")


def _container(engine: str, built: images.BuiltImage, workdir: Path) -> Iterator[Container]:
    # One container per image and session: on vfs each one is a full copy of the image.
    box = Container(engine, built.ref, workdir)
    yield box
    box.remove()


@pytest.fixture(scope="session")
def inference_box(engine, inference_image, tmp_path_factory) -> Iterator[Container]:
    yield from _container(engine, inference_image, tmp_path_factory.mktemp("inference-box"))


@pytest.fixture(scope="session")
def mirror_box(engine, mirror_image, tmp_path_factory) -> Iterator[Container]:
    yield from _container(engine, mirror_image, tmp_path_factory.mktemp("mirror-box"))


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry (the CNCF distribution registry) on loopback, for push and pull."""
    binary = shutil.which("docker-registry")
    if binary is None:
        _no_builder("docker-registry is not installed (apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = f"127.0.0.1:{port}"
    from tests.loopback import wait_until_ok

    try:
        wait_until_ok(f"http://{address}/v2/", timeout=30)
    except Exception:
        process.kill()
        raise
    yield address
    process.terminate()
    process.wait(10)

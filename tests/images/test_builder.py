"""The image builder's decisions, without building: tags, build args, pip's configuration."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.inference import image as identity
from platformctl import images

from ..conftest import ROOT


def test_tags_and_build_args_are_the_pulumi_builds():
    revision = identity.SourceRevision("abc1234", dirty=False)
    inference = images.IMAGES["inference"]
    assert images.image_tags(inference, "1.2.3", revision) == (
        "localhost/platform/inference-server:1.2.3",
        "localhost/platform/inference-server:1.2.3-abc1234",
    )
    assert images.build_args(inference, "1.2.3", revision, "cpu") == {
        "VARIANT": "cpu",
        "VERSION": "1.2.3",
        "REVISION": "abc1234",
    }
    mirror = images.IMAGES["mirror"]
    dirty = identity.SourceRevision("abc1234", dirty=True)
    assert images.image_tags(mirror, None, dirty) == ("localhost/platform/model-mirror:abc1234-dirty",)
    assert images.build_args(mirror, None, dirty, "cpu") == {"REVISION": "abc1234"}


def test_the_registry_bases_are_read_from_the_dockerfiles():
    for source in images.IMAGES.values():
        text = (ROOT / source.context / "Dockerfile").read_text()
        assert images.dockerfile_default(text, "PYTHON_IMAGE") == "python:3.11.14-slim-bookworm"
        for stage in source.foreign_stages:
            assert images.dockerfile_default(text, stage.build_arg), stage
            assert f"FROM ${{{stage.build_arg}}} AS {stage.stage}" in text
            for path in stage.paths:
                assert f"--from={stage.stage} {path}" in text
    assert images.dockerfile_default("ARG X\nARG Y=1\n", "X") is None


def test_every_dockerfile_mounts_the_pip_configuration_on_every_networked_pip_run():
    for source in images.IMAGES.values():
        text = (ROOT / source.context / "Dockerfile").read_text()
        assert "FROM scratch AS pip-local" in text
        runs = [
            run
            for run in text.split("\nRUN ")[1:]
            if "pip install -r" in run or "pip wheel" in run or ("pip install" in run and "--no-index" not in run)
        ]
        assert runs, source.name
        for run in runs:
            for mount in (
                "--mount=type=secret,id=pip.conf",
                "--mount=type=secret,id=build-ca",
                "--mount=type=bind,from=pip-local,target=/pip-local",
            ):
                assert mount in run, (source.name, mount, run[:200])
            assert "PIP_CONFIG_FILE=/run/secrets/pip.conf" in run
        assert "PIP_RETRIES=1" in text and "PIP_DEFAULT_TIMEOUT=20" in text


def test_this_machines_pip_configuration_translates(tmp_path):
    wheels = tmp_path / "wheels"
    (tmp_path / "pypi" / "simple" / "pkg").mkdir(parents=True)
    (tmp_path / "pypi" / "files").mkdir()
    wheels.mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = {
        "index-url": "https://pypi.example/simple",
        "extra-index-url": f"file://{tmp_path}/pypi/simple",
        "find-links": str(wheels),
        "cert": str(ca),
        "constraint": "/etc/xdg/pip/constraints.txt",
        "default-timeout": "180",
    }
    config = images.pip_build_config(settings)
    parsed = configparser.ConfigParser()
    parsed.read_string(config.conf)
    assert parsed["global"]["index-url"] == "https://pypi.example/simple"
    # A PEP 503 index brings its root, so its ../../files links still resolve.
    assert parsed["global"]["extra-index-url"] == f"file:///pip-local{tmp_path}/pypi/simple"
    assert parsed["global"]["find-links"] == f"/pip-local{wheels}"
    assert parsed["global"]["cert"] == "/run/secrets/build-ca"
    assert config.ca_file == ca
    assert dict(config.local_dirs) == {
        tmp_path / "pypi": f"{tmp_path}/pypi".lstrip("/"),
        wheels: str(wheels).lstrip("/"),
    }
    assert "constraint" not in parsed["global"] and "default-timeout" not in parsed["global"]
    assert any("constraint" in note and "default-timeout" in note for note in config.dropped)


def test_missing_local_paths_and_client_keys_are_left_out_and_said(tmp_path):
    config = images.pip_build_config(
        {
            "find-links": f"{tmp_path}/nope https://wheels.example/",
            "cert": f"{tmp_path}/no-ca.pem",
            "client-cert": "/etc/key.pem",
        }
    )
    parsed = configparser.ConfigParser()
    parsed.read_string(config.conf)
    assert parsed["global"]["find-links"] == "https://wheels.example/"
    assert config.ca_file is None and "cert" not in parsed["global"]
    notes = " ".join(config.dropped)
    assert "nope" in notes and "no-ca.pem" in notes and "client-cert" in notes


@given(
    st.lists(
        st.sampled_from(["https://a.example/simple", "http://b.example/", "file:///x/simple"]),
        min_size=1,
        max_size=4,
        unique=True,
    )
)
def test_remote_indexes_pass_through_unchanged(locations):
    remote = [location for location in locations if not location.startswith("file:")]
    config = images.pip_build_config({"extra-index-url": " ".join(remote)} if remote else {})
    parsed = configparser.ConfigParser()
    parsed.read_string(config.conf)
    if remote:
        assert parsed["global"]["extra-index-url"].split() == remote
    assert config.local_dirs == ()


def test_the_effective_settings_follow_pips_precedence(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = https://global.example/simple\nfind-links = /a\n[install]\nfind-links = /b\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    settings = images.effective_pip_settings(sys.executable)
    assert settings["index-url"] == "https://env.example/simple"  # environment over files
    assert settings["find-links"] == "/b"  # [install] over [global]


def test_pip_context_stages_local_directories_by_hard_link_and_cleans_up(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nfind-links = {wheels}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    for name in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(images, "CACHE_DIR", tmp_path / "cache")
    with images.pip_context(images.effective_pip_settings(sys.executable), log=lambda line: None) as (
        secrets,
        contexts,
    ):
        staged = contexts["pip-local"] / str(wheels).lstrip("/") / "pkg-1.0-py3-none-any.whl"
        assert staged.read_bytes() == b"wheel"
        assert staged.stat().st_ino == (wheels / "pkg-1.0-py3-none-any.whl").stat().st_ino
        assert oct(secrets["pip.conf"].stat().st_mode & 0o777) == "0o600"
        assert f"/pip-local{wheels}" in secrets["pip.conf"].read_text()
    assert not secrets["pip.conf"].exists() and not contexts["pip-local"].exists()


def test_the_debian_mirror_comes_from_apts_sources(monkeypatch):
    monkeypatch.setenv("DEBIAN_MIRROR", "http://mirror.example/debian")
    assert images.debian_mirror() == "http://mirror.example/debian"
    monkeypatch.delenv("DEBIAN_MIRROR")
    assert images.debian_mirror().startswith(("http://", "https://"))


def test_an_unknown_image_or_base_is_refused_by_name():
    with pytest.raises(images.ImageBuildError, match="unknown image 'web'"):
        images.build("web", ROOT)
    with pytest.raises(images.ImageBuildError, match="base 'cloud'"):
        images.build("inference", ROOT, base="cloud")


def test_the_cli_names_a_bad_variant():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "platformctl"), "image", "build", "inference", "--variant", "rocm"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "rocm" in result.stderr


def _builder_pip_env(dockerfile: Path) -> dict[str, str]:
    """The PIP_* settings the Dockerfile's builder stages set (their ENV line)."""
    line = next(line for line in dockerfile.read_text().splitlines() if line.startswith("ENV PIP_"))
    return dict(item.split("=", 1) for item in line.split()[1:])


def test_an_index_that_never_answers_fails_the_install_within_a_minute(tmp_path):
    """A black-holed index (it accepts, then says nothing: a dead proxy) must not crawl: with the
    Dockerfiles' PIP_RETRIES and PIP_DEFAULT_TIMEOUT pip gives up in well under a minute."""
    import os
    import socket
    import threading
    import time

    settings = _builder_pip_env(ROOT / "inference_image" / "Dockerfile")
    assert settings == _builder_pip_env(ROOT / "components" / "mirror" / "Dockerfile")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def swallow() -> None:  # accept and hold connections, never answer
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
        **settings,
        "PIP_CONFIG_FILE": os.devnull,
    }
    started = time.monotonic()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--dest",
                str(tmp_path),
                "--index-url",
                f"http://127.0.0.1:{port}/simple",
                "no-such-package-x",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        listener.close()
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert (
        "timed out" in (result.stdout + result.stderr).lower() or "timeout" in (result.stdout + result.stderr).lower()
    )
    assert elapsed < 60, f"pip took {elapsed:.0f} s to give up on a dead index"

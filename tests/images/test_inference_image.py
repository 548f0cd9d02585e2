"""The inference image, built from its Dockerfile and started as Kubernetes starts it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

import httpx
import pytest

from components.inference import image as identity
from platformctl import images

from ..conftest import ROOT
from .containers import Container, process_uids
from .imports import import_everything_argv, lock_of
from .leaks import scan_layers

IMAGE = ROOT / "inference_image"
SERVER_SRC = IMAGE / "src" / "inference_server"
# Uncompressed size of the CPU image (docs/images.md): torch's CPU build is most of it.
SIZE_BUDGET_MB = 1600
BUILD_TOOLS = ("gcc", "cc", "c++", "g++", "make", "ld", "as", "cpp", "clang")


def _wait_ready(url: str, started, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            pytest.fail(f"the entrypoint exited with {started.process.returncode}:\n{started.output()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"/readyz not 200 within {timeout} s:\n{started.output()[-4000:]}")


@pytest.fixture(scope="module")
def running(inference_box: Container):
    """The entrypoint with --demo --no-auth, on a loopback port set through PORT (as a pod spec sets it)."""
    from tests.loopback import free_port

    box = inference_box
    port = free_port()
    started = box.start(["--demo", "--no-auth"], env={"PORT": str(port), "HOST": "127.0.0.1"})
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, started)
    yield box, started, url, port
    status = box.stop(started, "inference-server")
    log = started.output()
    # uvicorn re-raises SIGTERM after its graceful shutdown: 143 under docker; buildah says so in words.
    assert "Application shutdown complete" in log, log[-3000:]
    assert status == 143 if box.engine == "docker" else "subprocess exited on terminated" in log, log[-3000:]


def test_the_entrypoint_serves_completions_streamed_chat_and_metrics_as_the_image_user(running):
    box, started, url, port = running
    completion = httpx.post(
        f"{url}/v1/completions",
        timeout=60,
        json={"model": "platform/demo-llama-tiny", "prompt": "Hello", "max_tokens": 8},
    )
    assert completion.status_code == 200, completion.text
    body = completion.json()
    assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] >= 1

    events = []
    chat = {
        "model": "platform/demo-llama-tiny",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 8,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) >= 2 and all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)

    metrics = httpx.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert re.search(r'^inference_request_duration_seconds_count\{.*route="/v1/completions"', metrics.text, re.M), (
        metrics.text[:2000]
    )
    generated = re.search(r"^inference_generated_tokens_total (\S+)$", metrics.text, re.M)
    assert generated and float(generated.group(1)) >= 2

    # The server process runs as the image's user, never root.
    assert box.user == "10001:10001"
    uids = process_uids(box, "inference-server")
    assert uids, "no inference-server process found"
    assert all(uid == (10001, 10001) for uid in uids.values()), uids


def test_the_images_healthcheck_passes_against_the_running_server(running):
    box, started, url, port = running
    result = box.exec(box.healthcheck, env={"PORT": str(port)})
    assert result.returncode == 0, result.stdout + result.stderr
    # And it fails when nothing listens there: the check can tell.
    from tests.loopback import free_port

    idle = box.exec(box.healthcheck, env={"PORT": str(free_port())})
    assert idle.returncode != 0


def test_everything_the_server_imports_is_installed_and_pip_check_is_clean(inference_image, inference_box: Container):
    box = inference_box
    check = box.exec(["pip", "check"])
    assert check.returncode == 0, check.stdout + check.stderr
    result = box.exec(
        import_everything_argv("inference_server", SERVER_SRC, then="import torch; print(torch.__version__)\n")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("+cpu"), f"the CPU image carries torch {result.stdout.strip()}"


def test_the_images_packages_are_exactly_the_lock(inference_box: Container):
    """pip freeze in the image is requirements.txt's torch plus constraints.txt, nothing else."""
    box = inference_box
    frozen = box.exec(["pip", "freeze", "--all", "--exclude", "pip", "--exclude", "inference-server"])
    assert frozen.returncode == 0, frozen.stderr
    installed = lock_of(frozen.stdout)
    installed.pop("torch")
    locked = lock_of((IMAGE / "constraints.txt").read_text())
    assert installed == locked, {
        "only in the image": sorted(set(installed.items()) - set(locked.items())),
        "only in constraints.txt": sorted(set(locked.items()) - set(installed.items())),
    }


def test_the_final_stage_has_no_build_tools(inference_image, inference_box: Container):
    box = inference_box
    found = box.exec(
        [
            "sh",
            "-c",
            "for t in " + " ".join(BUILD_TOOLS) + "; do command -v $t; done; "
            "dpkg-query -W -f '${Package}\\n' 2>/dev/null | grep -E '^(gcc|gcc-[0-9]+|g\\+\\+(-[0-9]+)?|"
            "cpp(-[0-9]+)?|binutils.*|make|build-essential|libc6-dev|(lib)?python3[0-9.]*-dev)$' || true",
        ]
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "", f"build tools in the final image:\n{found.stdout}"


def test_the_oci_labels_carry_the_version_and_revision(inference_image, inference_box: Container):
    box = inference_box
    labels = box.labels
    revision = identity.source_revision(ROOT)
    assert labels["org.opencontainers.image.version"] == identity.read_version(ROOT)
    assert labels["org.opencontainers.image.revision"] == revision.short_id
    assert labels["org.opencontainers.image.variant"] == "cpu"
    assert inference_image.tags[-1].endswith(identity.release_tag(identity.read_version(ROOT), revision))


def test_no_pip_configuration_ca_or_local_wheel_from_the_build_host_is_in_any_layer(inference_image, engine, tmp_path):
    scan = scan_layers(engine, inference_image, tmp_path)
    assert scan.total_bytes < SIZE_BUDGET_MB * 2**20, f"{scan.total_bytes / 2**20:.0f} MiB, budget {SIZE_BUDGET_MB}"
    assert scan.own_layers, "no layers of our own"
    assert scan.leaks == []


def test_push_to_a_registry_and_pull_back_by_digest(inference_image, registry, tmp_path):
    pushed, digest = images.push(inference_image, registry, tls_verify=False)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    repository = pushed.rsplit(":", 1)[0]
    pinned = f"{repository}@{digest}"
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{pinned}"], capture_output=True, text=True
    )
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == digest
    pulled = tmp_path / "pulled"
    copy = subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{pinned}", f"dir:{pulled}"],
        capture_output=True,
        text=True,
    )
    assert copy.returncode == 0, copy.stderr
    assert "sha256:" + hashlib.sha256((pulled / "manifest.json").read_bytes()).hexdigest() == digest
    # The reference the Deployments run (components/inference/image.pinned_ref) is exactly this one.
    assert identity.pinned_ref(repository, digest) == pinned


def test_it_serves_as_the_deployment_runs_it_read_only_root_and_emptydirs(inference_box: Container):
    """readOnlyRootFilesystem, the model cache and /tmp as emptyDirs, runAsUser, all capabilities
    dropped (components/inference/manifests.py): a server that wrote anywhere else would crash-loop."""
    from components.inference import manifests
    from tests.loopback import free_port

    port = free_port()
    started = inference_box.start_as_pod(
        ["--demo", "--no-auth"],
        {"PORT": str(port), "HOST": "127.0.0.1"},
        writable=(manifests.MODEL_CACHE_PATH, "/tmp"),
        uid=manifests.RUN_AS,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, started)
        completion = httpx.post(
            f"{url}/v1/completions",
            timeout=60,
            json={"model": "platform/demo-llama-tiny", "prompt": "Hi", "max_tokens": 4},
        )
        assert completion.status_code == 200, completion.text
        uids = process_uids(inference_box, "inference-server")
        assert uids and all(uid == (manifests.RUN_AS, manifests.RUN_AS) for uid in uids.values()), uids
    finally:
        inference_box.stop(started, "inference-server")
    assert "Read-only file system" not in started.output(), started.output()[-3000:]

"""Loading a pinned revision through HF_ENDPOINT: download, checksum verification, offline restart.

The endpoint is a loopback stand-in for the Hub (tests/fake_hub.py); the server is the real
process, started the way the Deployment starts it (--model-id, --revision, a cache volume).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import httpx
import pytest

from inference_server.manifest import MANIFEST_NAME, sha256_of
from tests.fake_hub import FakeHub

from .conftest import MODEL, start_server

COMMIT = "0123456789abcdef0123456789abcdef01234567"
MANIFEST_DIR = "manifests/models--platform--demo-llama-tiny"


@pytest.fixture
def hub(demo_dir):
    # An upstream repo carries no platform manifest: the server records its own on download.
    fake = FakeHub.from_directory(MODEL, COMMIT, demo_dir, skip=(MANIFEST_NAME,))
    url = fake.start()
    yield fake, url
    fake.stop()


def _hub_args(cache, revision=COMMIT):
    return ("--model-id", MODEL, "--revision", revision, "--cache-dir", str(cache))


def test_a_pinned_revision_downloads_through_hf_endpoint_is_recorded_and_restarts_offline(hub, tmp_path):
    fake, url = hub
    cache = tmp_path / "cache"
    server = start_server(None, tmp_path, *_hub_args(cache), auth=False, env={"HF_ENDPOINT": url})
    try:
        server.wait_ready()
        body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=30).json()["usage"]["completion_tokens"] > 0
    finally:
        server.stop()
    fetched = {path.split(f"/resolve/{COMMIT}/", 1)[1] for method, path in fake.requests
               if method == "GET" and "/resolve/" in path}  # fmt: skip
    assert fetched == set(fake.files)  # every file came through the endpoint, pinned to the commit

    manifest = json.loads((cache / MANIFEST_DIR / f"{COMMIT}.json").read_text())
    assert (manifest["modelId"], manifest["revision"], manifest["source"]) == (MODEL, COMMIT, url)
    assert manifest["downloadedAt"].endswith("Z")
    snapshot = cache / "models--platform--demo-llama-tiny" / "snapshots" / COMMIT
    assert {e["path"]: e["sha256"] for e in manifest["files"]} == {
        path: sha256_of(snapshot / path) for path in fake.files
    }

    # The mirror is gone: the cache volume alone, verified against the recorded manifest, serves.
    fake.stop()
    restarted = start_server(None, tmp_path, *_hub_args(cache), auth=False, env={"HF_ENDPOINT": url})
    try:
        restarted.wait_ready()
    finally:
        restarted.stop()
    fake.start()  # the fixture stops it again

    # Bytes altered in the cache after download are caught at the next start, by file name.
    weights = snapshot / "model.safetensors"
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    tampered = start_server(None, tmp_path, *_hub_args(cache), auth=False, env={"HF_ENDPOINT": url})
    assert tampered.process.wait(60) == 1
    assert f"{weights}: SHA-256 does not match the manifest" in tampered.log.read_text()


def test_bytes_that_do_not_match_the_published_checksums_refuse_start_naming_the_file(hub, tmp_path):
    fake, url = hub
    served = bytearray(fake.files["model.safetensors"])
    served[100] ^= 0xFF  # same size, different content: only a checksum catches it
    fake.corrupt["model.safetensors"] = bytes(served)
    cache = tmp_path / "cache"
    server = start_server(None, tmp_path, *_hub_args(cache), auth=False, env={"HF_ENDPOINT": url})
    assert server.process.wait(60) == 1
    log = server.log.read_text()
    assert f"model.safetensors: sha256 {hashlib.sha256(served).hexdigest()} does not match" in log
    assert f"published for {MODEL}@{COMMIT}" in log
    assert not (cache / MANIFEST_DIR).exists()  # nothing recorded as verified


@pytest.mark.parametrize("revision", ["main", "v1.0", "0123abc"])
def test_a_revision_that_can_move_is_refused_before_anything_is_downloaded(hub, tmp_path, revision):
    fake, url = hub
    result = subprocess.run(
        [sys.executable, "-m", "inference_server.cli", *_hub_args(tmp_path, revision), "--no-auth"],
        capture_output=True, text=True, timeout=60, env={"HF_ENDPOINT": url, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert f"--revision '{revision}': pin a 40-character commit hash" in result.stderr
    assert fake.requests == []

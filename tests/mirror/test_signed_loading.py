"""The model server trusts a mirrored revision only through the mirror's signature.

Real processes: the mirror app over moto's S3 on loopback (synced and signed from a loopback
Hub), and the inference server started as the Deployment starts it (--model-id, --revision,
a cache volume, MIRROR_PUBLIC_KEY_FILE). Each tampering refuses start-up naming what failed,
and /readyz never answers 200.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from components.mirror.runtime import signing
from components.mirror.runtime.layout import blob_key
from components.mirror.runtime.sync import sync_revision
from inference_server import provenance
from inference_server.demo import DEMO_MODEL_ID
from tests.inference.conftest import start_server

from .conftest import COMMIT_1
from .test_signing import _pem_pair

MANIFEST = f"repos/{DEMO_MODEL_ID}/revisions/{COMMIT_1}.json"


@pytest.fixture
def signed_mirror(demo_files_hub, store, serve, tmp_path):
    _, upstream_url = demo_files_hub
    private, public = _pem_pair()
    sync_revision(store, DEMO_MODEL_ID, "main", upstream=upstream_url, signer=signing.LocalSigner(private, key_id="test"))
    (tmp_path / "mirror-key.pem").write_text(public)
    return store, serve(), tmp_path / "mirror-key.pem", private


def _start(url: str, key, tmp_path, name: str = "cache"):
    args = ("--model-id", DEMO_MODEL_ID, "--revision", COMMIT_1, "--cache-dir", str(tmp_path / name))
    return start_server(None, tmp_path, *args, auth=False,
                        env={"HF_ENDPOINT": url, "MIRROR_PUBLIC_KEY_FILE": str(key), "HF_HUB_DISABLE_XET": "1"})  # fmt: skip


def _assert_refused(server, reason: str) -> None:
    """The process exits non-zero with ``reason`` in its log; /readyz never said 200 on the way."""
    ready = False
    while server.process.poll() is None:
        try:
            ready |= httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            pass
    log = server.log.read_text()
    assert server.process.returncode != 0 and not ready
    assert reason in log, log[-2000:]


def test_a_signed_revision_loads_and_restarts_from_the_verified_cache(signed_mirror, tmp_path):
    store, url, key, _ = signed_mirror
    server = _start(url, key, tmp_path)
    try:
        server.wait_ready()
        body = {"model": DEMO_MODEL_ID, "prompt": "Hi", "max_tokens": 3, "temperature": 0}
        assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=30).status_code == 200
    finally:
        server.stop()
    [signed] = list((tmp_path / "cache").rglob(f"{COMMIT_1}.signed.json"))
    text, signature = provenance.load(signed)
    assert text == store.manifest_text(DEMO_MODEL_ID, COMMIT_1) and json.loads(signature)["keyId"] == "test"
    # Editing the cached signed manifest (a cache volume is writable) is caught at the next start.
    signed.write_text(json.dumps({"manifest": text.replace('"size": ', '"size": 9', 1), "signature": signature}))
    _assert_refused(_start(url, key, tmp_path), "the manifest was altered after signing")


def test_one_changed_byte_of_a_weight_refuses_start_naming_the_file(signed_mirror, tmp_path):
    store, url, key, _ = signed_mirror
    manifest = json.loads(store.manifest_text(DEMO_MODEL_ID, COMMIT_1))
    weight = next(f for f in manifest["files"] if f["path"].endswith(".safetensors"))
    data = bytearray(store.client.get_object(Bucket=store.bucket, Key=blob_key(weight["sha256"]))["Body"].read())
    data[len(data) // 2] ^= 0x01
    store.client.put_object(Bucket=store.bucket, Key=blob_key(weight["sha256"]), Body=bytes(data))
    _assert_refused(_start(url, key, tmp_path), "SHA-256 does not match the manifest")


def test_an_altered_manifest_refuses_start(signed_mirror, tmp_path):
    store, url, key, _ = signed_mirror
    text = store.manifest_text(DEMO_MODEL_ID, COMMIT_1)
    store._write_text(MANIFEST, text.replace('"published_at": "', '"published_at": "1', 1))
    _assert_refused(_start(url, key, tmp_path), "the manifest was altered after signing")


def test_a_signature_by_another_key_refuses_start(signed_mirror, tmp_path):
    store, url, key, _ = signed_mirror
    text = store.manifest_text(DEMO_MODEL_ID, COMMIT_1)
    store.put_signature(DEMO_MODEL_ID, COMMIT_1, signing.sign(text.encode(), signing.LocalSigner(_pem_pair()[0], "rogue")))
    _assert_refused(_start(url, key, tmp_path), "does not verify with the configured mirror key (signed by 'rogue'")


def test_an_unsigned_revision_refuses_start(signed_mirror, tmp_path):
    store, url, key, _ = signed_mirror
    store.client.delete_object(Bucket=store.bucket, Key=MANIFEST + ".sig")
    _assert_refused(_start(url, key, tmp_path), "the mirror's manifest is unsigned")


def test_the_mirror_and_the_server_agree_on_the_format():
    private, public = _pem_pair()
    text = json.dumps({"repo": "a/b", "commit": "c" * 40, "files": [{"path": "w", "size": 1, "sha256": "0" * 64}]})
    document = signing.sign(text.encode(), signing.LocalSigner(private))
    assert provenance.verify_signed_manifest(text, document, public, "a/b", "c" * 40) == [
        {"path": "w", "size": 1, "sha256": "0" * 64}]
    with pytest.raises(provenance.ProvenanceError, match="is for a/b@c"):
        provenance.verify_signed_manifest(text, document, public, "a/b", "d" * 40)  # a valid signature, another revision
    assert hashlib.sha256(text.encode()).hexdigest() == json.loads(document)["manifestSha256"]

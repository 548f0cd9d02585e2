"""Signed provenance of a mirrored model: verify the mirror's signature before trusting any checksum.

The mirror signs each revision's manifest (repo, commit, every file's path, size, SHA-256)
with ECDSA P-256 over the manifest's SHA-256 (components/mirror/runtime/signing.py, the
same document format; tests/mirror/test_signed_loading.py proves the two agree). The
server fetches that manifest and its signature from ``HF_ENDPOINT``, checks the signature
with the configured public key, and only then uses the manifest's checksums to verify
the downloaded files. The signed manifest is kept in the cache and its signature checked
again at every start, so a tampered cache volume is caught too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from inference_server.manifest import IntegrityError

ALGORITHM = "ECDSA_SHA_256"


class ProvenanceError(IntegrityError):
    """The revision's manifest is unsigned, signed by another key, altered, or for another revision."""


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ProvenanceError(f"the mirror public key is not a PEM public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ProvenanceError("the mirror public key must be an ECDSA P-256 key")
    return key


def verify_signed_manifest(manifest_text: str, signature: str | None, public_key_pem: str, model_id: str,
                           revision: str) -> list[dict]:  # fmt: skip
    """The manifest's files, once its signature verifies and it names this exact revision."""
    what = f"{model_id}@{revision}"
    key = load_public_key(public_key_pem)
    if signature is None:
        raise ProvenanceError(f"{what}: the mirror's manifest is unsigned; refusing to trust its checksums")
    try:
        document = json.loads(signature)
        raw = base64.b64decode(document["signature"], validate=True)
        algorithm, claimed = document["algorithm"], document["manifestSha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProvenanceError(f"{what}: malformed manifest signature ({exc})") from exc
    if algorithm != ALGORITHM:
        raise ProvenanceError(f"{what}: manifest signature algorithm {algorithm!r}, expected {ALGORITHM}")
    digest = hashlib.sha256(manifest_text.encode("utf-8")).digest()
    if claimed != digest.hex():
        raise ProvenanceError(f"{what}: the manifest was altered after signing")
    try:
        key.verify(raw, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature as exc:
        raise ProvenanceError(f"{what}: the manifest's signature does not verify with the configured mirror key "
                              f"(signed by {document.get('keyId')!r}: another key, or forged)") from exc  # fmt: skip
    manifest = json.loads(manifest_text)
    if manifest.get("repo") != model_id or manifest.get("commit") != revision:
        raise ProvenanceError(f"{what}: the signed manifest is for {manifest.get('repo')}@{manifest.get('commit')}")
    return [{"path": f["path"], "size": int(f["size"]), "sha256": f["sha256"]} for f in manifest["files"]]


def fetch_signed_manifest(endpoint: str, model_id: str, revision: str) -> tuple[str, str | None]:
    import httpx

    url = f"{endpoint.rstrip('/')}/api/platform/revisions/{model_id}/{revision}"
    try:
        response = httpx.get(url, timeout=30, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ProvenanceError(f"{model_id}@{revision}: cannot fetch the signed manifest from {url}: {exc}") from exc
    if response.status_code != 200:
        raise ProvenanceError(f"{model_id}@{revision}: {url} answered {response.status_code}: the endpoint publishes "
                              "no signed manifest for it")  # fmt: skip
    body = response.json()
    return body["manifest"], body.get("signature")


def save(path: Path, manifest_text: str, signature: str | None) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"manifest": manifest_text, "signature": signature}), encoding="utf-8")
    partial.replace(path)


def load(path: Path) -> tuple[str, str | None]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["manifest"], data.get("signature")

"""Signed revision manifests: ECDSA P-256 over the SHA-256 of the manifest's stored bytes.

The sync signs each revision it publishes. In AWS it uses an asymmetric KMS key
(``ECC_NIST_P256``, ``SIGN_VERIFY``), so the private key never leaves KMS. On premises it
uses a PEM key pair held as a Pulumi secret. Both produce the same signature document,
stored beside the manifest as ``<manifest key>.sig``:

    {"algorithm": "ECDSA_SHA_256", "keyId": "...", "manifestSha256": "<hex>", "signature": "<base64 DER>"}

Verifying needs only the public key: the servers and ``platformctl mirror verify
--signatures`` never call KMS.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

ALGORITHM = "ECDSA_SHA_256"  # KMS's name; the same curve and hash as the local signer


class SignatureError(Exception):
    """A signature is missing, malformed, made by another key, or does not match; str() says which."""


class Signer(Protocol):
    key_id: str

    def sign_digest(self, digest: bytes) -> bytes: ...


@dataclass
class KmsSigner:
    """Signs with an asymmetric KMS key (kms:Sign on the digest; the sync role may, nobody else)."""

    key_id: str
    client: Any

    def sign_digest(self, digest: bytes) -> bytes:
        return self.client.sign(KeyId=self.key_id, Message=digest, MessageType="DIGEST",
                                SigningAlgorithm=ALGORITHM)["Signature"]  # fmt: skip

    def public_key_pem(self) -> str:
        der = self.client.get_public_key(KeyId=self.key_id)["PublicKey"]
        key = serialization.load_der_public_key(der)
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class LocalSigner:
    """Signs with a PEM P-256 private key (on premises)."""

    private_key_pem: str
    key_id: str = "local"

    def __post_init__(self) -> None:
        key = serialization.load_pem_private_key(self.private_key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise SignatureError("the signing key must be an ECDSA P-256 private key (PEM)")
        self._key = key

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def public_key_pem(self) -> str:
        return self._key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()  # fmt: skip


def sign(manifest_bytes: bytes, signer: Signer) -> str:
    """The signature document for these exact manifest bytes."""
    digest = hashlib.sha256(manifest_bytes).digest()
    return json.dumps({"algorithm": ALGORITHM, "keyId": signer.key_id, "manifestSha256": digest.hex(),
                       "signature": base64.b64encode(signer.sign_digest(digest)).decode()}, sort_keys=True)  # fmt: skip


def fingerprint(public_key_pem: str) -> str:
    """SHA-256 of the public key's DER: names a key in errors and logs."""
    key = serialization.load_pem_public_key(public_key_pem.encode())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def verify(manifest_bytes: bytes, signature_document: str | bytes | None, public_key_pem: str, what: str) -> None:
    """Raise SignatureError unless ``signature_document`` signs ``manifest_bytes`` with ``public_key_pem``.

    ``what`` names the manifest in the error (repo@commit, or a path).
    """
    if signature_document is None:
        raise SignatureError(f"{what}: unsigned (no signature beside the manifest); refusing to trust it")
    try:
        document = json.loads(signature_document)
        signature = base64.b64decode(document["signature"], validate=True)
        algorithm, claimed = document["algorithm"], document["manifestSha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{what}: malformed signature document ({exc})") from exc
    if algorithm != ALGORITHM:
        raise SignatureError(f"{what}: signature algorithm {algorithm!r}, expected {ALGORITHM}")
    digest = hashlib.sha256(manifest_bytes).digest()
    if claimed != digest.hex():
        raise SignatureError(f"{what}: the manifest changed after signing (SHA-256 {digest.hex()[:16]}…, "
                             f"signed {str(claimed)[:16]}…)")  # fmt: skip
    key = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError(f"{what}: the configured public key is not an ECDSA key")
    try:
        key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature as exc:
        raise SignatureError(f"{what}: signature does not verify with key {fingerprint(public_key_pem)} "
                             f"(signed by {document.get('keyId')!r}: another key, or a forged signature)") from exc  # fmt: skip

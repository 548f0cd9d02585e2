"""Integrity manifest of a model directory: every file's size and SHA-256.

Written when a model is produced or mirrored, verified before anything is loaded. A
missing, extra-weight or altered file refuses start-up with an error naming the file.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20
# Files that change what the model computes; one on disk but not in the manifest is refused.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class IntegrityError(Exception):
    """The model directory does not match its manifest."""


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(
    model_dir: Path, model_id: str, revision: str, target: Path | None = None, source: str | None = None
) -> Path:
    """Record every file below ``model_dir`` (except the manifest itself).

    ``source`` is the endpoint a downloaded model came from; its manifest then records the
    download time, and lives at ``target`` outside the (hub-managed) snapshot directory.
    """
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = {
        "modelId": model_id,
        "revision": revision,
        **({"source": source, "downloadedAt": now} if source else {"createdAt": now}),
        "files": [
            {"path": p.relative_to(model_dir).as_posix(), "size": p.stat().st_size, "sha256": sha256_of(p)}
            for p in files
        ],
    }
    target = target or model_dir / MANIFEST_NAME
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.replace(target)  # a crash mid-write leaves no half manifest behind
    return target


def verify_manifest(model_dir: Path, manifest_path: Path | None = None) -> dict:
    """Check ``model_dir`` against its manifest; return the manifest. Raises IntegrityError."""
    path = manifest_path or model_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entries = [ManifestEntry(e["path"], int(e["size"]), e["sha256"]) for e in manifest["files"]]
    except FileNotFoundError as exc:
        raise IntegrityError(f"{path}: no integrity manifest; refusing to load an unverified model") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{path}: unreadable manifest ({exc})") from exc
    listed = {e.path for e in entries}
    for entry in entries:
        file = model_dir / entry.path
        if not file.is_file():
            raise IntegrityError(f"{file}: listed in the manifest but missing")
        if file.stat().st_size != entry.size:
            raise IntegrityError(f"{file}: size {file.stat().st_size} != {entry.size} in the manifest")
        if sha256_of(file) != entry.sha256:
            raise IntegrityError(f"{file}: SHA-256 does not match the manifest (file altered or corrupt)")
    for file in model_dir.rglob("*"):
        if file.is_file() and file.suffix in _WEIGHT_SUFFIXES and file.relative_to(model_dir).as_posix() not in listed:
            raise IntegrityError(f"{file}: weight file not in the manifest")
    return manifest

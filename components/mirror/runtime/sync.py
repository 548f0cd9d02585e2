"""Pull a repo revision from upstream (the Hub, or another mirror of ours) into the bucket.

Each file streams through a spooled temporary file (memory bounded whatever its size) while
its SHA-256 and git blob id are computed; it is stored only if it matches what upstream
published (LFS sha256, or git blob id for regular files). Blobs already stored are skipped,
so a re-sync of an unchanged repo downloads nothing and an interrupted sync resumes where it
stopped. The revision is published (manifest, then ref) only when every file is stored and
verified; on any mismatch nothing is published and the previous ref keeps being served.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from . import signing
from .layout import COMMIT, FileEntry, RevisionManifest, check_path, check_ref, check_repo
from .signing import Signer
from .store import MirrorStore

SPOOL_BYTES = 8 * 1024 * 1024  # files beyond this spill to disk while they are hashed
CHUNK = 1024 * 1024
DEFAULT_UPSTREAM = "https://huggingface.co"

Progress = Callable[[str, int, int], None]  # (path, bytes just moved, file size)
AUDIT_SCHEMA = "v1"  # components/storage/audit.py: Fluent Bit routes on it, the Glue table reads it


def audit_subject() -> str:
    """Who publishes: the Kubernetes service account the pod says it runs as, else user@host."""
    return os.environ.get("PLATFORM_AUDIT_SUBJECT") or f"{getpass.getuser()}@{socket.gethostname()}"


def publish_event(manifest: RevisionManifest, revision: str, refs: list[str], signed: bool, subject: str) -> dict[str, Any]:
    """The ``mirror.publish`` audit event of one published revision (pure)."""
    return {
        "audit": AUDIT_SCHEMA, "event": "mirror.publish", "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "subject": subject, "resource": f"{manifest.repo}@{manifest.commit}", "repo": manifest.repo,
        "revision": revision, "commit": manifest.commit, "files": len(manifest.files),
        "bytes": sum(entry.size for entry in manifest.files), "refs": list(refs), "signed": signed,
    }  # fmt: skip


def emit_audit(event: dict[str, Any]) -> None:
    """One JSON line on stderr, the sync's log: the log shipper takes it to the audit bucket."""
    print(json.dumps(event, sort_keys=True), file=sys.stderr, flush=True)


class SyncError(Exception):
    """A revision could not be mirrored; ``str()`` names the repo, revision and files."""


@dataclass
class SyncReport:
    repo: str
    revision: str
    commit: str
    files: int = 0
    skipped: int = 0
    downloaded_bytes: int = 0
    published_refs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _UpstreamFile:
    path: str
    size: int
    git_oid: str
    lfs_sha256: str | None


def _upstream_files(api, repo: str, commit: str) -> list[_UpstreamFile]:
    from huggingface_hub.hf_api import RepoFile

    files = []
    for item in api.list_repo_tree(repo, revision=commit, recursive=True):
        if isinstance(item, RepoFile):
            files.append(_UpstreamFile(check_path(item.path), item.size, item.blob_id,
                                       item.lfs.sha256 if item.lfs is not None else None))  # fmt: skip
    return files


def _download_verified(client, url: str, file: _UpstreamFile, spool: IO[bytes], progress: Progress) -> tuple[str, int]:
    """Stream ``url`` into ``spool``; return (sha256, size). Raises SyncError on any mismatch."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % file.size)  # noqa: S324 - git's object id, not security
    size = 0
    with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise SyncError(f"{file.path}: upstream answered {response.status_code}")
        for chunk in response.iter_bytes(CHUNK):
            sha256.update(chunk)
            if file.lfs_sha256 is None:
                git.update(chunk)
            spool.write(chunk)
            size += len(chunk)
            progress(file.path, len(chunk), file.size)
    digest = sha256.hexdigest()
    if size != file.size:
        raise SyncError(f"{file.path}: {size} bytes received, upstream lists {file.size}")
    if file.lfs_sha256 is not None and digest != file.lfs_sha256:
        raise SyncError(f"{file.path}: sha256 {digest} does not match upstream's LFS sha256 {file.lfs_sha256}")
    if file.lfs_sha256 is None and git.hexdigest() != file.git_oid:
        raise SyncError(f"{file.path}: git blob id {git.hexdigest()} does not match upstream's {file.git_oid}")
    spool.seek(0)
    return digest, size


def sync_revision(
    store: MirrorStore,
    repo: str,
    revision: str,
    upstream: str = DEFAULT_UPSTREAM,
    workers: int = 4,
    progress: Progress = lambda path, moved, size: None,
    token: str | bool | None = None,
    signer: Signer | None = None,
    audit: Callable[[dict[str, Any]], None] = emit_audit,
) -> SyncReport:
    """Mirror ``repo`` at ``revision`` (a commit, branch or tag) and publish it.

    With ``signer``, the manifest is signed before any name points at it: a client that
    resolves a name only ever finds a signed revision. Once published, one ``mirror.publish``
    audit event goes to ``audit``.
    """
    import httpx
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    check_repo(repo)
    check_ref(revision)
    where = f"{repo}@{revision}"
    api = HfApi(endpoint=upstream, token=token)
    try:
        commit = revision if COMMIT.fullmatch(revision) else api.repo_info(repo, revision=revision).sha
        files = _upstream_files(api, repo, commit)
    except Exception as exc:  # noqa: BLE001 - any upstream failure is reported with the repo and revision
        raise SyncError(f"{where}: cannot read the revision from {upstream}: {exc}") from exc
    if not commit or not COMMIT.fullmatch(commit):
        raise SyncError(f"{where}: upstream {upstream} returned no commit for the revision")
    report = SyncReport(repo, revision, commit)
    counting = threading.Lock()
    headers = build_hf_headers(token=token)
    # The Hub redirects LFS files to its CDN; httpx drops Authorization on cross-origin hops.
    client = httpx.Client(headers=headers, follow_redirects=True, timeout=httpx.Timeout(60, read=300))

    def mirror_one(file: _UpstreamFile) -> FileEntry:
        known = file.lfs_sha256 if file.lfs_sha256 is not None else store.git_index(file.git_oid)
        if known is not None and store.has_blob(known):
            progress(file.path, file.size, file.size)
            with counting:
                report.skipped += 1
            return FileEntry(file.path, file.size, known, file.git_oid, file.lfs_sha256 is not None)
        url = hf_hub_url(repo, file.path, revision=commit, endpoint=upstream)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            sha256, size = _download_verified(client, url, file, spool, progress)
            with counting:
                report.downloaded_bytes += size
            if not store.has_blob(sha256):
                store.put_blob(sha256, spool)
        if file.lfs_sha256 is None:
            store.put_git_index(file.git_oid, sha256)
        return FileEntry(file.path, size, sha256, file.git_oid, file.lfs_sha256 is not None)

    entries: list[FileEntry] = []
    problems: list[str] = []
    with client, ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mirror-sync") as pool:
        futures = {file.path: pool.submit(mirror_one, file) for file in files}
        for path, future in futures.items():
            try:
                entries.append(future.result())
            except SyncError as exc:
                problems.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - reported by file, the revision is not published
                problems.append(f"{path}: {type(exc).__name__}: {exc}")
    if problems:
        raise SyncError(f"{where} (commit {commit}) not published: " + "; ".join(sorted(problems)))
    report.files = len(entries)
    names = () if revision == commit else (revision,)
    manifest = RevisionManifest(
        repo=repo, commit=commit, files=tuple(sorted(entries, key=lambda e: e.path)),
        published_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), upstream=upstream, refs=names,
    )  # fmt: skip
    store.put_manifest(manifest)  # first the revision, complete ...
    if signer is not None:  # ... signed (over the bytes as stored) ...
        store.put_signature(repo, commit, signing.sign(manifest.to_json().encode("utf-8"), signer))
    for name in names:
        store.put_ref(repo, name, commit)  # ... then the name clients resolve
        report.published_refs.append(name)
    audit(publish_event(manifest, revision, report.published_refs, signer is not None, audit_subject()))
    return report


@dataclass
class Damage:
    repo: str
    commit: str
    path: str
    problem: str


def verify(store: MirrorStore, repos: list[str] | None = None, progress: Progress = lambda p, m, s: None
           ) -> tuple[int, list[Damage]]:  # fmt: skip
    """Re-hash every stored blob the published revisions list. Returns (blobs checked, damage)."""
    damage: list[Damage] = []
    checked: dict[str, str | None] = {}  # sha256 -> problem, each blob hashed once
    for repo in repos or store.repos():
        for commit in store.commits(repo):
            manifest = store.manifest(repo, commit)
            assert manifest is not None
            for entry in manifest.files:
                if entry.sha256 not in checked:
                    checked[entry.sha256] = _rehash(store, entry, progress)
                if checked[entry.sha256]:
                    damage.append(Damage(repo, commit, entry.path, checked[entry.sha256] or ""))
    return len(checked), damage


def verify_signatures(store: MirrorStore, public_key_pem: str, repos: list[str] | None = None) -> tuple[int, list[Damage]]:
    """Check every published revision's signature with the public key. Returns (revisions checked, damage)."""
    damage: list[Damage] = []
    checked = 0
    for repo in repos or store.repos():
        for commit in store.commits(repo):
            checked += 1
            text = store.manifest_text(repo, commit)
            try:
                signing.verify((text or "").encode("utf-8"), store.signature(repo, commit), public_key_pem,
                               f"{repo}@{commit}")  # fmt: skip
            except signing.SignatureError as exc:
                damage.append(Damage(repo, commit, "-", str(exc).split(": ", 1)[1]))
    return checked, damage


def _rehash(store: MirrorStore, entry: FileEntry, progress: Progress) -> str | None:
    from .store import StoreError

    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in store.iter_blob(entry.sha256):
            digest.update(chunk)
            size += len(chunk)
            progress(entry.path, len(chunk), entry.size)
    except StoreError:
        return "blob missing from the bucket"
    if size != entry.size:
        return f"stored blob has {size} bytes, the manifest lists {entry.size}"
    if digest.hexdigest() != entry.sha256:
        return f"stored blob hashes to {digest.hexdigest()}, not {entry.sha256}"
    return None

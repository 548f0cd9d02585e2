"""What the mirror stores, and where (pure).

Bucket layout:

    blobs/sha256/<sha256>                     every file's bytes, content-addressed
    index/git-sha1/<git blob id>              -> the sha256 of a regular (non-LFS) file's bytes
    repos/<org>/<name>/revisions/<commit>.json  a published revision: every file's path,
                                              size, sha256, git blob id, LFS flag
    repos/<org>/<name>/refs/<branch or tag>   -> the commit last *published* under that name

A revision is published by writing its manifest and then its ref, after every blob it
lists is stored and verified: a client never sees a half-synced revision, and a failed
sync leaves the previous ref (and everything it points at) untouched.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_REF = re.compile(r"^[\w][\w.-]{0,127}$")  # branch or tag names the mirror accepts
POINTER_SIZE = 134  # size of a git-lfs pointer file, which the Hub reports as lfs.pointerSize


class LayoutError(ValueError):
    """A repo id, revision or path the mirror refuses (never used to build a key)."""


def check_repo(repo: str) -> str:
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise LayoutError(f"{repo!r} is not a repo id (ORG/NAME)")
    return repo


def check_ref(ref: str) -> str:
    if not _REF.fullmatch(ref) or ".." in ref:
        raise LayoutError(f"{ref!r} is not a branch, tag or commit name")
    return ref


def check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise LayoutError(f"{path!r} is not a file path inside a repo")
    return path


def blob_key(sha256: str) -> str:
    if not SHA256.fullmatch(sha256):
        raise LayoutError(f"{sha256!r} is not a sha256")
    return f"blobs/sha256/{sha256}"


def git_index_key(git_oid: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{40}", git_oid):
        raise LayoutError(f"{git_oid!r} is not a git blob id")
    return f"index/git-sha1/{git_oid}"


def revision_key(repo: str, commit: str) -> str:
    if not COMMIT.fullmatch(commit):
        raise LayoutError(f"{commit!r} is not a commit")
    return f"repos/{check_repo(repo)}/revisions/{commit}.json"


def ref_key(repo: str, ref: str) -> str:
    return f"repos/{check_repo(repo)}/refs/{check_ref(ref)}"


def git_blob_id(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    git_oid: str  # the git blob id: of the file itself, or of its LFS pointer for LFS files
    lfs: bool

    @property
    def etag(self) -> str:
        """What the Hub puts in ETag / X-Linked-Etag: the LFS sha256, else the git blob id."""
        return self.sha256 if self.lfs else self.git_oid

    def tree_entry(self) -> dict:
        """One file as the Hub's tree API lists it (no xetHash: Xet would bypass the mirror)."""
        entry: dict = {"type": "file", "oid": self.git_oid, "size": self.size, "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": POINTER_SIZE}
        return entry


@dataclass(frozen=True)
class RevisionManifest:
    repo: str
    commit: str
    files: tuple[FileEntry, ...]
    published_at: str
    upstream: str
    refs: tuple[str, ...] = field(default=())  # names it was published under at sync time

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)

    def to_json(self) -> str:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RevisionManifest:
        data = json.loads(text)
        files = tuple(FileEntry(**f) for f in data.pop("files"))
        return cls(files=files, refs=tuple(data.pop("refs", ())), **data)

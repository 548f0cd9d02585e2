"""A stand-in for huggingface.co on loopback: the few endpoints huggingface_hub downloads through.

It is the upstream, not the mirror: tests point ``HF_ENDPOINT`` at it to prove a client-side
path (snapshot download, checksum verification) without the internet. It serves one repo at
one or more commits from in-memory file maps, with branch names (``push`` moves one),
answers like the Hub does (``X-Repo-Commit``, ``ETag`` = git blob id or LFS SHA-256,
``X-Error-Code`` on 404s) and records every request. ``corrupt`` makes it serve different
bytes than the checksums it publishes, as a damaged mirror or a man in the middle would;
``failing`` answers 500 for some paths, as a flaky upstream would.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Which files the Hub stores in LFS (its .gitattributes defaults for model weights).
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


@dataclass
class FakeHub:
    repo_id: str
    commit: str
    files: dict[str, bytes]
    corrupt: dict[str, bytes] = field(default_factory=dict)  # path -> bytes served instead
    requests: list[tuple[str, str]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)  # paths answered with 500
    revisions: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit

    def __post_init__(self) -> None:
        self.revisions.setdefault(self.commit, self.files)
        self.refs.setdefault("main", self.commit)

    def push(self, commit: str, files: dict[str, bytes], branch: str = "main") -> None:
        """A new commit on ``branch`` (a force-push too: the old commit stays addressable)."""
        self.revisions[commit] = files
        self.refs[branch] = commit

    def resolve(self, revision: str) -> str | None:
        return revision if revision in self.revisions else self.refs.get(revision)

    @classmethod
    def from_directory(cls, repo_id: str, commit: str, directory: Path, skip: tuple[str, ...] = ()) -> FakeHub:
        files = {p.relative_to(directory).as_posix(): p.read_bytes()
                 for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in skip}  # fmt: skip
        return cls(repo_id, commit, files)

    def tree_entry(self, path: str, commit: str | None = None) -> dict:
        data = self.revisions[commit or self.commit][path]
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
        if path.endswith(_LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def etag(self, path: str, commit: str | None = None) -> str:
        entry = self.tree_entry(path, commit)
        return entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet: tests read hub.requests
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path))
                api = f"/api/models/{hub.repo_id}/"
                resolve = f"/{hub.repo_id}/resolve/"
                if path.startswith(api + "tree/"):
                    commit = hub.resolve(path[len(api + "tree/"):].split("/", 1)[0])
                    if commit is None:
                        return self._missing("RevisionNotFound", body)
                    listing = [hub.tree_entry(p, commit) for p in sorted(hub.revisions[commit])]
                    return self._send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, body)
                if path.startswith(api + "revision/"):
                    commit = hub.resolve(path[len(api + "revision/"):])
                    if commit is None:
                        return self._missing("RevisionNotFound", body)
                    info = {"id": hub.repo_id, "sha": commit,
                            "siblings": [{"rfilename": p} for p in hub.revisions[commit]]}  # fmt: skip
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
                if path.startswith(resolve):
                    revision, _, file = path[len(resolve):].partition("/")
                    commit = hub.resolve(revision)
                    if commit is None:
                        return self._missing("RevisionNotFound", body)
                    files = hub.revisions[commit]
                    if file not in files:
                        return self._missing("EntryNotFound", body)
                    if file in hub.failing:
                        return self._send(500, b"upstream trouble", {}, body)
                    data = hub.corrupt.get(file, files[file])
                    headers = {"X-Repo-Commit": commit, "ETag": f'"{hub.etag(file, commit)}"',
                               "Content-Type": "application/octet-stream"}  # fmt: skip
                    return self._send(200, data, headers, body)
                return self._missing("RepoNotFound", body)

            def _missing(self, code: str, body: bool) -> None:
                self._send(404, json.dumps({"error": code}).encode(), {"X-Error-Code": code}, body)

            def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""A stand-in for huggingface.co on loopback: the few endpoints huggingface_hub downloads through.

It is the upstream, not the mirror: tests point ``HF_ENDPOINT`` at it to prove a client-side
path (snapshot download, checksum verification) without the internet. It serves one repo at
one commit from an in-memory file map, answers like the Hub does (``X-Repo-Commit``,
``ETag`` = git blob id or LFS SHA-256, ``X-Error-Code`` on 404s) and records every request.
``corrupt`` makes it serve different bytes than the checksums it publishes, as a damaged
mirror or a man in the middle would.
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

    @classmethod
    def from_directory(cls, repo_id: str, commit: str, directory: Path, skip: tuple[str, ...] = ()) -> FakeHub:
        files = {p.relative_to(directory).as_posix(): p.read_bytes()
                 for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in skip}  # fmt: skip
        return cls(repo_id, commit, files)

    def tree_entry(self, path: str) -> dict:
        data = self.files[path]
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
        if path.endswith(_LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def etag(self, path: str) -> str:
        entry = self.tree_entry(path)
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
                    revision = path[len(api + "tree/"):].split("/", 1)[0]
                    if revision != hub.commit:
                        return self._missing("RevisionNotFound", body)
                    listing = [hub.tree_entry(p) for p in sorted(hub.files)]
                    return self._send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, body)
                if path.startswith(api + "revision/"):
                    if path[len(api + "revision/"):] != hub.commit:
                        return self._missing("RevisionNotFound", body)
                    info = {"id": hub.repo_id, "sha": hub.commit, "siblings": [{"rfilename": p} for p in hub.files]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
                if path.startswith(resolve):
                    revision, _, file = path[len(resolve):].partition("/")
                    if revision != hub.commit:
                        return self._missing("RevisionNotFound", body)
                    if file not in hub.files:
                        return self._missing("EntryNotFound", body)
                    data = hub.corrupt.get(file, hub.files[file])
                    headers = {"X-Repo-Commit": hub.commit, "ETag": f'"{hub.etag(file)}"',
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

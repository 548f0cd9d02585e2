"""The mirror's HTTP app: the Hub API paths huggingface_hub uses, answered from the bucket.

The same ASGI app runs locally (``platformctl mirror serve``), behind CloudFront as the
Lambda origin (through the Lambda Web Adapter, unchanged) and in the private cloud.
Checked against the pinned huggingface_hub's own client code (file_download.py,
hf_api.py, utils/_http.py):

- ``GET /api/models/{repo}[/revision/{rev}]``: JSON with ``sha`` and ``siblings``
  (with ``?blobs=true``: sizes, blob ids and LFS info).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: the tree listing, paginated with
  ``Link: <…>; rel="next"``.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: a **relative** redirect to the immutable
  blob URL, with ``X-Repo-Commit``, ``X-Linked-Etag`` (LFS sha256, or git blob id) and
  ``X-Linked-Size``. huggingface_hub follows same-host redirects on HEAD and takes the file
  metadata from the final response, so the blob URL carries the commit and etag in its query
  string and the blob response repeats them (at the edge a CloudFront Function does).
- ``HEAD``/``GET /blobs/sha256/{sha256}``: the bytes, with ``Range`` answered by 206.
- 404s carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``),
  which huggingface_hub turns into its typed errors. No ``X-Xet-*`` header or ``xetHash``
  field is ever sent: a Xet-aware client would otherwise fetch from Xet storage, bypassing
  the mirror.

Branch and tag names resolve to the commit last *published* under them; responses by
name are cached briefly, responses by commit are immutable.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .layout import COMMIT, SHA256, LayoutError, RevisionManifest, check_path, check_ref, check_repo
from .store import MirrorStore

IMMUTABLE = "public, max-age=31536000, immutable"
BY_NAME = "public, max-age=60"  # a branch may move at the next publish
TREE_PAGE = 1000
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_HEX = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # a commit / git blob id, or a sha256


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status,
                        headers={"X-Error-Code": code, "X-Error-Message": message, "Cache-Control": "no-store"})  # fmt: skip


def git_tree_id(entries: list[tuple[str, str, bool]]) -> str:
    """Git's tree object id for (name, object id, is_directory) entries (files as mode 100644)."""
    body = b""
    for name, oid, is_dir in sorted(entries, key=lambda e: e[0] + ("/" if e[2] else "")):
        body += (b"40000 " if is_dir else b"100644 ") + name.encode() + b"\0" + bytes.fromhex(oid)
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()  # noqa: S324 - git's object id


def _tree_ids(manifest: RevisionManifest) -> dict[str, str]:
    """Every directory's git tree id, from the files' blob ids, deepest directories first."""
    children: dict[str, dict[str, tuple[str, bool]]] = {"": {}}
    for entry in manifest.files:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            children.setdefault("/".join(parts[:depth]), {})
        children["/".join(parts[:-1])][parts[-1]] = (entry.git_oid, False)
    ids: dict[str, str] = {}
    for directory in sorted(children, key=lambda d: d.count("/") + 1 if d else 0, reverse=True):
        ids[directory] = git_tree_id([(name, oid, is_dir) for name, (oid, is_dir) in children[directory].items()])
        if directory:
            parent, _, name = directory.rpartition("/")
            children[parent][name] = (ids[directory], True)
    return ids


def create_app(store: MirrorStore, public_url: str | None = None, page_size: int = TREE_PAGE) -> Starlette:
    """``public_url``: the mirror's address as clients see it (for pagination links behind a CDN)."""

    published: dict[tuple[str, str], RevisionManifest] = {}
    trees: dict[tuple[str, str], dict[str, str]] = {}  # directory git ids, computed once per revision

    def manifest_at(repo: str, commit: str) -> RevisionManifest | None:
        """Published revisions never change, so they are kept; a miss is asked again next time."""
        key = (repo, commit)
        if key not in published:
            manifest = store.manifest(repo, commit)
            if manifest is None:
                return None
            if len(published) >= 256:
                trees.pop(oldest := next(iter(published)), None)
                published.pop(oldest)
            published[key] = manifest
        return published[key]

    def resolve(repo: str, revision: str) -> tuple[RevisionManifest | None, Response | None, str]:
        try:
            check_repo(repo)
        except LayoutError as exc:
            return None, _error(404, "RepoNotFound", str(exc)), ""
        try:
            check_ref(revision)
        except LayoutError as exc:
            return None, _error(404, "RevisionNotFound", str(exc)), ""
        if COMMIT.fullmatch(revision):
            manifest, cache = manifest_at(repo, revision), IMMUTABLE
        else:
            commit = store.ref(repo, revision)
            manifest, cache = (manifest_at(repo, commit) if commit else None), BY_NAME
        if manifest is None:
            if not store.commits(repo):
                return None, _error(404, "RepoNotFound", f"Repository {repo} is not on this mirror"), ""
            return None, _error(404, "RevisionNotFound", f"Revision {revision} of {repo} is not published"), ""
        return manifest, None, cache

    def base(request: Request) -> str:
        return (public_url or str(request.base_url)).rstrip("/")

    async def model_info(request: Request) -> Response:
        repo = f"{request.path_params['org']}/{request.path_params['name']}"
        manifest, error, cache = resolve(repo, request.path_params.get("revision", "main"))
        if error is not None:
            return error
        assert manifest is not None
        with_blobs = request.query_params.get("blobs", "").lower() == "true"
        siblings = []
        for entry in manifest.files:
            sibling: dict = {"rfilename": entry.path}
            if with_blobs:
                sibling |= {"size": entry.size, "blobId": entry.git_oid}
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": 134}
            siblings.append(sibling)
        body = {"_id": manifest.commit, "id": repo, "modelId": repo, "sha": manifest.commit, "private": False,
                "disabled": False, "gated": False, "lastModified": manifest.published_at, "siblings": siblings}  # fmt: skip
        return JSONResponse(body, headers={"Cache-Control": cache})

    async def tree(request: Request) -> Response:
        repo = f"{request.path_params['org']}/{request.path_params['name']}"
        revision = request.path_params["revision"]
        manifest, error, cache = resolve(repo, revision)
        if error is not None:
            return error
        assert manifest is not None
        prefix = request.path_params.get("path", "").strip("/")
        recursive = request.query_params.get("recursive", "").lower() in ("true", "1")
        entries: list[dict] = []
        directories: set[str] = set()
        if (repo, manifest.commit) not in trees:
            trees[(repo, manifest.commit)] = _tree_ids(manifest)
        tree_ids = trees[(repo, manifest.commit)]
        if prefix and prefix not in tree_ids and manifest.file(prefix) is None:
            return _error(404, "EntryNotFound", f"{prefix} is not in {repo}@{manifest.commit}")
        for entry in manifest.files:
            if prefix and not entry.path.startswith(prefix + "/"):
                continue
            relative = entry.path[len(prefix) + 1 :] if prefix else entry.path
            parts = relative.split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(([prefix] if prefix else []) + parts[:depth])
                if directory not in directories and (recursive or depth == 1):
                    directories.add(directory)
                    entries.append({"type": "directory", "oid": tree_ids[directory], "size": 0, "path": directory})
            if recursive or len(parts) == 1:
                entries.append(entry.tree_entry())
        entries.sort(key=lambda e: e["path"])
        try:
            start = int(request.query_params.get("cursor", "0"))
        except ValueError:
            return _error(400, "BadRequest", "cursor must be an integer")
        page = entries[start : start + page_size]
        headers = {"Cache-Control": cache}
        if start + page_size < len(entries):
            query = {k: v for k, v in request.query_params.items() if k != "cursor"} | {"cursor": start + page_size}
            path = f"/api/models/{repo}/tree/{revision}" + (f"/{prefix}" if prefix else "")
            headers["Link"] = f'<{base(request)}{path}?{urlencode(query)}>; rel="next"'
        return JSONResponse(page, headers=headers)

    async def resolve_file(request: Request) -> Response:
        repo = f"{request.path_params['org']}/{request.path_params['name']}"
        manifest, error, cache = resolve(repo, request.path_params["revision"])
        if error is not None:
            return error
        assert manifest is not None
        path = request.path_params["path"]
        try:
            entry = manifest.file(check_path(path))
        except LayoutError:
            entry = None
        if entry is None:
            return _error(404, "EntryNotFound", f"{path} is not in {repo}@{manifest.commit}")
        query = urlencode({"commit": manifest.commit, "etag": entry.etag})
        headers = {
            "Location": f"/blobs/sha256/{entry.sha256}?{query}",  # relative: same host, same CDN
            "X-Repo-Commit": manifest.commit,
            "X-Linked-Etag": f'"{entry.etag}"',
            "X-Linked-Size": str(entry.size),
            "ETag": f'"{entry.etag}"',
            "Cache-Control": cache,
        }
        return Response(status_code=302, headers=headers)

    async def blob(request: Request) -> Response:
        sha256 = request.path_params["sha256"]
        if not SHA256.fullmatch(sha256):
            return _error(404, "EntryNotFound", "not a blob")
        headers = {"Accept-Ranges": "bytes", "Cache-Control": IMMUTABLE, "Content-Type": "application/octet-stream"}
        # What the resolve redirect carried along (the Hub metadata huggingface_hub reads here).
        commit, etag = request.query_params.get("commit", ""), request.query_params.get("etag", "")
        if _HEX.fullmatch(commit) and len(commit) == 40:
            headers["X-Repo-Commit"] = commit
        if _HEX.fullmatch(etag):
            headers["X-Linked-Etag"] = headers["ETag"] = f'"{etag}"'
        byte_range = request.headers.get("range")
        if byte_range is not None and not _RANGE.fullmatch(byte_range.strip()):
            byte_range = None  # not a single byte range: answer the whole blob, as S3 does
        try:
            body = store.open_blob(sha256, byte_range)
        except ValueError:
            return Response(status_code=416, headers={"Content-Range": "bytes */*", **headers})
        if body is None:
            return _error(404, "EntryNotFound", f"blob {sha256} is not stored")
        headers["Content-Length"] = str(body.size)
        status = 200
        if body.content_range:
            status, headers["Content-Range"] = 206, body.content_range
        if request.method == "HEAD":
            body.stream.close()
            return Response(status_code=status, headers=headers)
        return StreamingResponse(body.stream.iter_chunks(1 << 20), status_code=status, headers=headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def signed_manifest(request: Request) -> Response:
        """The platform's own route: a revision's manifest exactly as stored, and its signature
        (null when unsigned). Model servers verify both before trusting a downloaded file."""
        repo, commit = f"{request.path_params['org']}/{request.path_params['name']}", request.path_params["commit"]
        if not COMMIT.fullmatch(commit):
            return _error(404, "RevisionNotFound", f"{commit!r} is not a commit")
        try:
            text = store.manifest_text(repo, commit)
        except LayoutError:
            return _error(404, "RepoNotFound", f"{repo!r} is not a repository name")
        if text is None:
            return _error(404, "RevisionNotFound", f"{repo}@{commit} is not published here")
        return JSONResponse({"repo": repo, "commit": commit, "manifest": text, "signature": store.signature(repo, commit)},
                            # short: a revision signed later (re-sync) must not stay unsigned at the edge
                            headers={"Cache-Control": "public, max-age=60"})  # fmt: skip

    repo_path = "{org}/{name}"
    return Starlette(routes=[
        Route("/healthz", healthz),
        Route(f"/api/models/{repo_path}", model_info),
        Route(f"/api/models/{repo_path}/revision/{{revision}}", model_info),
        Route(f"/api/models/{repo_path}/tree/{{revision}}", tree),
        Route(f"/api/models/{repo_path}/tree/{{revision}}/{{path:path}}", tree),
        Route(f"/{repo_path}/resolve/{{revision}}/{{path:path}}", resolve_file, methods=["GET", "HEAD"]),
        Route("/blobs/sha256/{sha256}", blob, methods=["GET", "HEAD"]),
        Route(f"/api/platform/revisions/{repo_path}/{{commit}}", signed_manifest),
    ])  # fmt: skip

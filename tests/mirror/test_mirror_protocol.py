"""Upstream -> sync -> S3 -> mirror app -> huggingface_hub / transformers, all on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

from components.mirror.runtime.layout import blob_key
from components.mirror.runtime.sync import SyncError, sync_revision, verify

from .conftest import COMMIT_1, COMMIT_2, REPO, files_of


def test_a_synced_repo_downloads_byte_identical_and_loads_with_transformers(upstream, store, serve, tmp_path):
    hub, upstream_url = upstream
    report = sync_revision(store, REPO, "main", upstream=upstream_url)
    assert (report.commit, report.files, report.published_refs) == (COMMIT_1, len(hub.files), ["main"])
    mirror = serve()

    path = snapshot_download(REPO, revision=COMMIT_1, endpoint=mirror, cache_dir=tmp_path / "cache")
    assert files_of(Path(path)) == hub.files  # byte-identical
    by_name = snapshot_download(REPO, revision="main", endpoint=mirror, cache_dir=tmp_path / "cache2")
    assert files_of(Path(by_name)) == hub.files

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama" and tokenizer("hello")["input_ids"]


def test_clients_use_it_unchanged_through_hf_endpoint(upstream, store, serve, tmp_path):
    """from_pretrained with a repo id, as an application would: only HF_ENDPOINT differs."""
    hub, upstream_url = upstream
    sync_revision(store, REPO, "main", upstream=upstream_url)
    mirror = serve()
    code = ("from transformers import AutoModelForCausalLM, AutoTokenizer; "
            f"m = AutoModelForCausalLM.from_pretrained({REPO!r}, revision='main'); "
            f"t = AutoTokenizer.from_pretrained({REPO!r}, revision='main'); print(m.config.model_type)")  # fmt: skip
    env = {**os.environ, "HF_ENDPOINT": mirror, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("llama")


def test_resolve_answers_like_the_hub_and_never_mentions_xet(upstream, store, serve):
    hub, upstream_url = upstream
    sync_revision(store, REPO, "main", upstream=upstream_url)
    mirror = serve()
    weights, config = "model.safetensors", "config.json"
    for path, etag in ((weights, hashlib.sha256(hub.files[weights]).hexdigest()), (config, hub.etag(config))):
        head = httpx.head(f"{mirror}/{REPO}/resolve/main/{path}")
        assert head.status_code == 302
        assert head.headers["location"].startswith("/blobs/sha256/")  # relative: same host
        assert head.headers["x-repo-commit"] == COMMIT_1
        assert head.headers["x-linked-etag"] == f'"{etag}"'
        assert head.headers["x-linked-size"] == str(len(hub.files[path]))
        assert head.headers["cache-control"] == "public, max-age=60"  # by branch: short
        final = httpx.head(f"{mirror}/{REPO}/resolve/{COMMIT_1}/{path}", follow_redirects=True)
        assert final.status_code == 200
        assert final.headers["x-repo-commit"] == COMMIT_1 and final.headers["x-linked-etag"] == f'"{etag}"'
        assert final.headers["content-length"] == str(len(hub.files[path]))
        assert "immutable" in final.headers["cache-control"]
        for response in (head, final):
            assert not [h for h in response.headers if h.lower().startswith("x-xet")]
    tree = httpx.get(f"{mirror}/api/models/{REPO}/tree/main", params={"recursive": "true"}).json()
    assert tree and all("xetHash" not in entry for entry in tree)
    lfs = [e for e in tree if e["path"] == weights][0]["lfs"]
    assert lfs["oid"] == hashlib.sha256(hub.files[weights]).hexdigest()


def test_range_requests_get_206(upstream, store, serve):
    hub, upstream_url = upstream
    sync_revision(store, REPO, "main", upstream=upstream_url)
    mirror = serve()
    data = hub.files["model.safetensors"]
    response = httpx.get(f"{mirror}/{REPO}/resolve/main/model.safetensors", headers={"Range": "bytes=100-199"},
                         follow_redirects=True)  # fmt: skip
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert response.content == data[100:200]
    beyond = httpx.get(f"{mirror}/{REPO}/resolve/main/model.safetensors",
                       headers={"Range": f"bytes={len(data) + 10}-"}, follow_redirects=True)  # fmt: skip
    assert beyond.status_code == 416


def test_unknown_files_revisions_and_repos_are_typed_404s(upstream, store, serve, tmp_path):
    hub, upstream_url = upstream
    sync_revision(store, REPO, "main", upstream=upstream_url)
    mirror = serve()
    response = httpx.head(f"{mirror}/{REPO}/resolve/main/no-such-file.bin")
    assert (response.status_code, response.headers["x-error-code"]) == (404, "EntryNotFound")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "no-such-file.bin", revision="main", endpoint=mirror, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="nope", endpoint=mirror, cache_dir=tmp_path)
    assert httpx.get(f"{mirror}/api/models/other/repo/revision/main").headers["x-error-code"] == "RepoNotFound"


def test_tree_pagination_follows_link_headers(upstream, store, serve):
    hub, upstream_url = upstream
    sync_revision(store, REPO, "main", upstream=upstream_url)
    mirror = serve(page_size=2)
    first = httpx.get(f"{mirror}/api/models/{REPO}/tree/{COMMIT_1}", params={"recursive": "true"})
    assert len(first.json()) == 2 and 'rel="next"' in first.headers["link"]
    listed = list(HfApi(endpoint=mirror).list_repo_tree(REPO, revision=COMMIT_1, recursive=True))
    assert sorted(f.path for f in listed) == sorted(hub.files)
    info = HfApi(endpoint=mirror).model_info(REPO, revision="main", files_metadata=True)
    assert info.sha == COMMIT_1
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes == {path: len(data) for path, data in hub.files.items()}


def test_resync_of_an_unchanged_repo_moves_no_bytes(upstream, store):
    hub, upstream_url = upstream
    first = sync_revision(store, REPO, "main", upstream=upstream_url)
    assert first.downloaded_bytes == sum(len(d) for d in hub.files.values())
    hub.requests.clear()
    again = sync_revision(store, REPO, "main", upstream=upstream_url)
    assert (again.downloaded_bytes, again.skipped, again.files) == (0, len(hub.files), len(hub.files))
    assert not [path for method, path in hub.requests if "/resolve/" in path]  # nothing fetched


def test_a_corrupt_upstream_file_is_named_nothing_is_published_and_the_old_revision_still_serves(
    upstream, store, serve, tmp_path, model_files
):
    hub, upstream_url = upstream
    sync_revision(store, REPO, "main", upstream=upstream_url)
    changed = dict(model_files)
    new_weights = bytearray(model_files["model.safetensors"])
    new_weights[-1] ^= 0xFF  # commit 2 changes the weights (an unchanged blob is never fetched again)
    changed["model.safetensors"] = bytes(new_weights)
    hub.push(COMMIT_2, changed)
    damaged = bytearray(changed["model.safetensors"])
    damaged[64] ^= 0xFF  # ... and upstream serves them damaged
    hub.corrupt["model.safetensors"] = bytes(damaged)
    with pytest.raises(SyncError) as caught:
        sync_revision(store, REPO, "main", upstream=upstream_url)
    message = str(caught.value)
    assert f"{REPO}@main (commit {COMMIT_2}) not published" in message
    assert "model.safetensors: sha256" in message and "does not match upstream's LFS sha256" in message
    assert store.ref(REPO, "main") == COMMIT_1 and store.manifest(REPO, COMMIT_2) is None
    mirror = serve()
    path = snapshot_download(REPO, revision="main", endpoint=mirror, cache_dir=tmp_path)
    assert files_of(Path(path)) == model_files  # the earlier revision, whole


def test_a_moved_branch_reaches_clients_after_the_next_sync(upstream, store, serve, tmp_path, model_files):
    hub, upstream_url = upstream
    sync_revision(store, REPO, "main", upstream=upstream_url)
    changed = dict(model_files)
    changed["config.json"] = model_files["config.json"].replace(b"{", b'{"note": "v2", ', 1)
    hub.push(COMMIT_2, changed)  # upstream force-pushed main
    mirror = serve()
    assert HfApi(endpoint=mirror).model_info(REPO, revision="main").sha == COMMIT_1  # not synced yet
    report = sync_revision(store, REPO, "main", upstream=upstream_url)
    assert report.commit == COMMIT_2
    assert report.downloaded_bytes == len(changed["config.json"])  # only what changed moved
    assert HfApi(endpoint=mirror).model_info(REPO, revision="main").sha == COMMIT_2
    path = hf_hub_download(REPO, "config.json", revision="main", endpoint=mirror, cache_dir=tmp_path)
    assert json.loads(open(path, "rb").read())["note"] == "v2"
    old = hf_hub_download(REPO, "config.json", revision=COMMIT_1, endpoint=mirror, cache_dir=tmp_path)
    assert open(old, "rb").read() == model_files["config.json"]  # pinned commits keep working


def test_an_interrupted_sync_resumes_without_moving_finished_blobs_again(upstream, store):
    hub, upstream_url = upstream
    hub.failing.add("tokenizer.json")
    with pytest.raises(SyncError, match="tokenizer.json: upstream answered 500"):
        sync_revision(store, REPO, "main", upstream=upstream_url)
    assert store.ref(REPO, "main") is None  # nothing published
    hub.failing.clear()
    hub.requests.clear()
    report = sync_revision(store, REPO, "main", upstream=upstream_url)
    fetched = {path.rsplit("/", 1)[1] for method, path in hub.requests if "/resolve/" in path}
    assert fetched == {"tokenizer.json"}
    assert report.downloaded_bytes == len(hub.files["tokenizer.json"])
    assert store.ref(REPO, "main") == COMMIT_1


def test_verify_finds_a_damaged_blob_and_names_the_file(upstream, store):
    hub, upstream_url = upstream
    sync_revision(store, REPO, "main", upstream=upstream_url)
    checked, damage = verify(store)
    assert checked == len({hashlib.sha256(d).hexdigest() for d in hub.files.values()}) and damage == []
    sha = hashlib.sha256(hub.files["model.safetensors"]).hexdigest()
    store.client.put_object(Bucket=store.bucket, Key=blob_key(sha), Body=b"rotten")
    checked, damage = verify(store)
    assert [(d.repo, d.commit, d.path) for d in damage] == [(REPO, COMMIT_1, "model.safetensors")]
    assert "6 bytes" in damage[0].problem


def test_bad_names_never_reach_the_bucket(store):
    from components.mirror.runtime.layout import LayoutError, check_path

    for bad in ("../x", "/etc/passwd", "a//b", ""):
        with pytest.raises(LayoutError):
            check_path(bad)
    with pytest.raises(LayoutError):
        sync_revision(store, "not-a-repo", "main", upstream="http://127.0.0.1:9")


def test_a_commit_asked_for_before_it_is_published_is_served_once_it_is(upstream, store, serve, tmp_path):
    hub, upstream_url = upstream
    mirror = serve()
    missing = httpx.get(f"{mirror}/api/models/{REPO}/revision/{COMMIT_1}")
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"
    sync_revision(store, REPO, COMMIT_1, upstream=upstream_url)
    assert httpx.get(f"{mirror}/api/models/{REPO}/revision/{COMMIT_1}").json()["sha"] == COMMIT_1
    assert store.ref(REPO, "main") is None  # synced by commit: no name was published

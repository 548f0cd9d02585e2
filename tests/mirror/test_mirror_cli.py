"""``platformctl mirror …`` as an operator runs it: any S3-compatible store via AWS_ENDPOINT_URL_S3."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx

from components.mirror.runtime.layout import blob_key

from tests.loopback import free_port, wait_until_ok

from .conftest import COMMIT_1, REPO

PLATFORMCTL = str(Path(sys.executable).parent / "platformctl")


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([PLATFORMCTL, "mirror", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})  # fmt: skip


def test_sync_ls_verify_and_serve_from_the_command_line(upstream, store, aws_env, tmp_path):
    hub, upstream_url = upstream
    bucket = ["--bucket", store.bucket]
    synced = run("sync", *bucket, "--repo", REPO, "--revision", "main", "--upstream", upstream_url, env=aws_env)
    assert synced.returncode == 0, synced.stderr
    assert f"{REPO}@main: published {COMMIT_1} as main: {len(hub.files)} files, 0 already stored" in synced.stdout

    listed = run("ls", *bucket, env=aws_env)
    assert listed.returncode == 0 and REPO in listed.stdout and COMMIT_1 in listed.stdout and "main" in listed.stdout

    again = run("sync", *bucket, "--repo", f"{REPO}@main", "--upstream", upstream_url, env=aws_env)
    assert f"{len(hub.files)} already stored, 0 bytes downloaded" in again.stdout

    assert run("verify", *bucket, env=aws_env).returncode == 0
    sha = hashlib.sha256(hub.files["tokenizer.json"]).hexdigest()
    store.client.put_object(Bucket=store.bucket, Key=blob_key(sha), Body=b"x" * len(hub.files["tokenizer.json"]))
    damaged = run("verify", *bucket, env=aws_env)
    assert damaged.returncode == 1 and "tokenizer.json" in damaged.stdout and "hashes to" in damaged.stdout

    port = free_port()
    server = subprocess.Popen([PLATFORMCTL, "mirror", "serve", *bucket, "--port", str(port)],
                              env={**os.environ, **aws_env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/healthz")
        info = httpx.get(f"http://127.0.0.1:{port}/api/models/{REPO}/revision/main").json()
        assert info["sha"] == COMMIT_1
    finally:
        server.terminate()
        server.wait(10)


def test_a_failed_sync_exits_1_naming_repo_revision_and_file(upstream, store, aws_env):
    hub, upstream_url = upstream
    hub.failing.add("config.json")
    result = run("sync", "--bucket", store.bucket, "--repo", REPO, "--revision", "main", "--upstream", upstream_url,
                 "--no-progress", env=aws_env)  # fmt: skip
    assert result.returncode == 1
    assert f"{REPO}@main (commit {COMMIT_1}) not published: config.json: upstream answered 500" in result.stderr


def test_revision_with_several_repos_is_refused(store, aws_env):
    result = run("sync", "--bucket", store.bucket, "--repo", "a/b", "--repo", "c/d", "--revision", "main", env=aws_env)
    assert result.returncode == 2 and "--revision goes with a single --repo" in result.stderr

"""The mirror image, built from its Dockerfile: sync once into S3 (moto), then serve the Hub API."""

from __future__ import annotations

import hashlib

import boto3
import httpx
import pytest
from huggingface_hub import hf_hub_download

from components.inference import image as identity
from tests.fake_hub import FakeHub
from tests.loopback import free_port

from ..conftest import ROOT
from .containers import Container, process_uids
from .imports import import_everything_argv, lock_of
from .leaks import scan_layers

MIRROR = ROOT / "components" / "mirror"
REPO = "platform/tiny-llama"
COMMIT = "3" * 40


@pytest.fixture
def upstream(model_files):
    hub = FakeHub(REPO, COMMIT, dict(model_files))
    url = hub.start()
    yield hub, url
    hub.stop()


@pytest.fixture
def bucket(aws_env):
    name = "mirror-image-smoke"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    yield name
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


def test_sync_once_then_serve_the_hub_api_from_s3_as_the_image_user(
    mirror_box: Container, upstream, bucket, aws_env, model_files, tmp_path
):
    hub, upstream_url = upstream
    box = mirror_box
    env = {**aws_env, "MIRROR_BUCKET": bucket}

    synced = box.exec(
        [*box.entrypoint, "sync", "--repo", f"{REPO}@{COMMIT}", "--upstream", upstream_url, "--no-progress"], env=env
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert f"published {COMMIT}" in synced.stdout

    port = free_port()
    served = box.start(env={**env, "PORT": str(port), "HOST": "127.0.0.1"})  # the image's CMD: serve
    url = f"http://127.0.0.1:{port}"
    from tests.loopback import wait_until_ok

    try:
        wait_until_ok(f"{url}/healthz", timeout=60)
    except TimeoutError:
        pytest.fail(f"/healthz never answered:\n{served.output()[-3000:]}")
    info = httpx.get(f"{url}/api/models/{REPO}/revision/{COMMIT}", timeout=10)
    assert info.status_code == 200 and info.json()["sha"] == COMMIT
    # A Hugging Face client, unchanged, downloads through it.
    path = hf_hub_download(REPO, "config.json", revision=COMMIT, endpoint=url, cache_dir=tmp_path / "cache")
    assert hashlib.sha256(open(path, "rb").read()).digest() == hashlib.sha256(model_files["config.json"]).digest()

    health = box.exec(box.healthcheck, env={"PORT": str(port)})
    assert health.returncode == 0, health.stdout + health.stderr
    assert box.user == "10001:10001"
    uids = process_uids(box, "model_mirror")
    assert uids and all(uid == (10001, 10001) for uid in uids.values()), uids
    status = box.stop(served, "model_mirror")  # uvicorn re-raises SIGTERM after shutting down
    log = served.output()
    assert status == 143 if box.engine == "docker" else "subprocess exited on terminated" in log, log[-3000:]


def test_the_mirror_image_holds_its_lock_imports_its_runtime_and_is_labelled(mirror_box: Container):
    box = mirror_box
    check = box.exec(["pip", "check"])
    assert check.returncode == 0, check.stdout + check.stderr
    imported = box.exec(import_everything_argv("model_mirror", MIRROR / "runtime"))
    assert imported.returncode == 0, imported.stderr[-3000:]
    frozen = box.exec(["pip", "freeze", "--all", "--exclude", "pip"])
    assert lock_of(frozen.stdout) == lock_of((MIRROR / "constraints.txt").read_text())
    assert (
        box.labels["org.opencontainers.image.revision"] == identity.source_revision(ROOT, "components/mirror").short_id
    )


def test_an_offline_build_says_which_stage_it_replaced(mirror_image, mirror_box: Container):
    """The Lambda Web Adapter comes from another registry; offline, a stand-in takes its place and says so."""
    if not mirror_image.stand_ins:
        pytest.skip("built with the registry's Lambda Web Adapter: nothing was replaced")
    assert any("lambda-adapter" in note and "unproven" in note for note in mirror_image.stand_ins)
    result = mirror_box.exec(["/opt/extensions/lambda-adapter"])
    assert result.returncode == 1 and "stand-in" in result.stderr


MIRROR_SIZE_BUDGET_MB = 400  # docs/images.md


def test_the_mirror_image_carries_nothing_of_the_build_hosts_pip_configuration(mirror_image, engine, tmp_path):
    scan = scan_layers(engine, mirror_image, tmp_path)
    assert scan.total_bytes < MIRROR_SIZE_BUDGET_MB * 2**20, f"{scan.total_bytes / 2**20:.0f} MiB"
    assert scan.own_layers and scan.leaks == []

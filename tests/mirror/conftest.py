"""Upstream (a loopback Hub), S3 (moto's server on loopback) and the mirror app, for real."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import uvicorn

from components.mirror.runtime.app import create_app
from components.mirror.runtime.store import MirrorStore
from inference_server.demo import build_demo_model
from inference_server.manifest import MANIFEST_NAME
from tests.fake_hub import FakeHub
from tests.loopback import free_port, wait_until_ok

REPO = "platform/tiny-llama"
COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A small real model repo: config, tokenizer, and a safetensors weight (LFS on the Hub)."""
    directory = build_demo_model(tmp_path_factory.mktemp("upstream-model"))
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}  # fmt: skip


def _hub(repo: str, files: dict[str, bytes]) -> Iterator[tuple[FakeHub, str]]:
    hub = FakeHub(repo, COMMIT_1, dict(files))
    url = hub.start()
    yield hub, url
    hub.stop()


@pytest.fixture
def upstream(model_files: dict[str, bytes]) -> Iterator[tuple[FakeHub, str]]:
    yield from _hub(REPO, model_files)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


@pytest.fixture
def store(aws_env: dict[str, str], request: pytest.FixtureRequest) -> MirrorStore:
    """A fresh bucket per test, through the S3 API on loopback."""
    bucket = f"mirror-{abs(hash(request.node.nodeid)) % 10**10}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return MirrorStore(bucket)


@pytest.fixture
def serve(store: MirrorStore) -> Iterator:
    """Start the mirror app over ``store`` on loopback; returns its URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(page_size: int | None = None) -> str:
        port = free_port()
        app = create_app(store) if page_size is None else create_app(store, page_size=page_size)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        wait_until_ok(f"{url}/healthz")
        servers.append((server, thread))
        return url

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.fixture
def demo_files_hub(model_files: dict[str, bytes]) -> Iterator[tuple[FakeHub, str]]:
    """The demo model as the inference server names it, on a loopback upstream."""
    from inference_server.demo import DEMO_MODEL_ID

    yield from _hub(DEMO_MODEL_ID, model_files)

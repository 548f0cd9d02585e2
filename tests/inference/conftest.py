"""Real servers on loopback, serving the offline demo model on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

from inference_server.demo import DEMO_MODEL_ID, build_demo_model
from tests.loopback import free_port

SECRET = "test-only-hs256-secret-with-enough-entropy-0123456789"
AUDIENCE = "inference-api"
ISSUER = "https://auth.platform.test"
MODEL = DEMO_MODEL_ID


def token(**overrides: object) -> str:
    claims = {"sub": "tester", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 300, **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, algorithm="HS256")


def auth_headers(**overrides: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**overrides)}"}


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(model_dir: Path | None, log_dir: Path, *args: str, auth: bool = True,
                 env: dict[str, str] | None = None) -> Server:  # fmt: skip
    """The server as a process; without ``model_dir`` the model comes from ``args`` (--model-id ...)."""
    port = free_port()
    log = log_dir / f"server-{port}.log"
    source = ["--model-dir", str(model_dir)] if model_dir is not None else []
    command = [sys.executable, "-m", "inference_server.cli", *source,
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *args]  # fmt: skip
    if auth:
        command += ["--jwt-algorithm", "HS256", "--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER]
    else:
        command += ["--no-auth"]
    env = {**os.environ, "JWT_KEY": SECRET, "OMP_NUM_THREADS": "1", **(env or {})}
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return Server(process=process, port=port, log=log)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo-model"))


@pytest.fixture(scope="session")
def server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: auth on, small limits so tests can hit each of them."""
    running = start_server(
        demo_dir, tmp_path_factory.mktemp("logs"),
        "--max-input-tokens", "64", "--max-new-tokens", "64", "--max-body-bytes", "4096",
        "--max-batch-size", "8", "--max-wait-ms", "50", "--max-queue", "64",
    )  # fmt: skip
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=auth_headers(), timeout=30) as http:
        yield http

"""Start-up, overload, timeouts and shutdown of a real server process."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from inference_server.api import ServerSettings, create_app
from inference_server.loading import load_model

from .conftest import MODEL, free_port, start_server


def _post(url: str, max_tokens: int = 16, timeout: float = 60, temperature: float = 1.0) -> httpx.Response:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": max_tokens, "temperature": temperature}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=timeout)


def test_a_tampered_weight_file_refuses_start_naming_the_file(demo_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(demo_dir, model)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    weights.write_bytes(bytes(data))
    server = start_server(model, tmp_path, auth=False)
    assert server.process.wait(60) == 1
    log = server.log.read_text()
    assert f"{weights}: SHA-256 does not match the manifest" in log


def test_a_missing_file_or_manifest_refuses_start(demo_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(demo_dir, model)
    (model / "tokenizer.json").unlink()
    server = start_server(model, tmp_path, auth=False)
    assert server.process.wait(60) == 1
    assert f"{model / 'tokenizer.json'}: listed in the manifest but missing" in server.log.read_text()


def test_readiness_is_503_until_loaded_and_warmed_up(demo_dir):
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return load_model(demo_dir)

    app = create_app(ServerSettings(), slow_load)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                first = httpx.get(f"{url}/readyz")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert first.status_code == 503
        assert first.json() == {"ready": False, "reason": "loading model"}
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive while loading
        assert _post(url).status_code == 503  # no generation before ready
        release.set()
        for _ in range(300):
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
            time.sleep(0.05)
        # Ready means warm-up already went through the engine and the whole HTTP path:
        # one completion and one streamed chat, in-process, 4 greedy tokens each (+4 engine-only).
        metrics = httpx.get(f"{url}/metrics").text
        assert "inference_generated_tokens_total 12.0" in metrics
        for route in ("/v1/completions", "/v1/chat/completions"):
            assert f'inference_request_duration_seconds_count{{route="{route}",status="200"}} 1.0' in metrics
        assert _post(url).status_code == 200
    finally:
        server.should_exit = True
        thread.join(30)


def test_sigterm_drains_in_flight_requests(demo_dir, tmp_path):
    server = start_server(demo_dir, tmp_path, "--grace-period", "60", "--max-batch-size", "4",
                          "--log-level", "info", auth=False)  # fmt: skip
    server.wait_ready()
    with ThreadPoolExecutor(8) as pool:
        # Greedy: the demo model's full answer is 200 tokens, so a cut-short answer would show.
        futures = [pool.submit(_post, server.url, 200, 60, 0.0) for _ in range(8)]
        time.sleep(0.5)  # all in flight, some still queued
        server.process.send_signal(15)
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["usage"]["completion_tokens"] for r in responses] == [200] * 8
    assert {r.json()["choices"][0]["finish_reason"] for r in responses} == {"length"}
    # uvicorn re-raises the signal after its graceful shutdown, so the status says "ended by
    # SIGTERM" (143 in a container), as supervisors expect; the log shows the orderly path.
    assert server.process.wait(60) == -15
    assert "Application shutdown complete" in server.log.read_text()
    with pytest.raises(httpx.TransportError):  # and it no longer accepts anything
        httpx.get(f"{server.url}/readyz", timeout=2)


def test_overload_gets_429_with_retry_after_and_memory_stays_bounded(demo_dir, tmp_path):
    server = start_server(demo_dir, tmp_path, "--max-queue", "4", "--max-batch-size", "2", auth=False)
    server.wait_ready()
    try:
        _post(server.url, 8)
        baseline = server.rss_kib()
        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(lambda _: _post(server.url, 32), range(200)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 429}
        assert codes.count(429) > 100 and codes.count(200) >= 4
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "queue_full"
        growth_mib = (server.rss_kib() - baseline) / 1024
        assert growth_mib < 64, f"RSS grew {growth_mib:.0f} MiB under overload"
    finally:
        server.stop()


def test_a_request_over_its_timeout_gets_504(demo_dir, tmp_path):
    server = start_server(demo_dir, tmp_path, "--request-timeout", "0.2", "--max-new-tokens", "4000",
                          "--max-input-tokens", "4000", auth=False)  # fmt: skip
    server.wait_ready()
    try:
        response = _post(server.url, 4000, temperature=0.0)  # greedy: never ends early on this model
        assert response.status_code == 504
        assert response.json()["error"]["message"] == "generation did not finish within 0.2 s"
        # The abandoned row stops generating: the server is free again right away.
        started = time.monotonic()
        assert _post(server.url, 4).status_code == 200
        assert time.monotonic() - started < 5
    finally:
        server.stop()


def test_auth_is_required_unless_explicitly_disabled(demo_dir, tmp_path):
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "inference_server.cli", "--model-dir", str(demo_dir), "--port", str(port)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    message = " ".join(result.stderr.replace("│", " ").split())
    assert "authentication needs --jwt-key/--jwt-key-file, --jwt-audience, --jwt-issuer" in message
    assert "--no-auth for local use" in message




def test_int8_quantized_model_serves(demo_dir, tmp_path):
    server = start_server(demo_dir, tmp_path, "--quantize-int8", "--device", "cpu", auth=False)
    server.wait_ready()
    try:
        response = _post(server.url, 8, temperature=0.0)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 8
    finally:
        server.stop()

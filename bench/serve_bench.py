"""Serving benchmark: ours against its peers, one run, loopback only, CPU, demo model.

Peers (each started here as its own process, on 127.0.0.1):
  - naive:   the seeds' FastAPI sample, one ``generate`` per request (bench/peers/naive_server.py)
  - litserve: LitServe with dynamic batching, max batch 32 (bench/peers/litserve_server.py)
  - transformers-serve: ``transformers serve --continuous-batching``
  - ours:    ``inference-server`` (max batch 32, 10 ms wait)

Fixed workload: 32 prompts cycled, max_tokens 16, greedy; at concurrency 1, 8 and 32 a fixed
number of requests each, after a warm-up. Reports requests/s, generated tokens/s, P50/P99
latency, time to first token (streaming servers; the full latency for those that cannot
stream), peak RSS of the server's process tree, and ours/peer ratios. Also ours' first
request right after /readyz turns 200 against its steady-state median.

    python bench/serve_bench.py [--peers naive litserve transformers-serve] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.loopback import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_TOKENS = 16
WORDS = "spot reserved capacity model mirror batch token stream latency queue gpu cluster".split()
PROMPTS = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 10)) for i in range(32)]
# Enough requests per level that P99 is a percentile, not the single slowest request.
REQUESTS = {1: 200, 8: 400, 32: 800}


@dataclass
class Peer:
    name: str
    command: list[str]
    ready_path: str
    url_path: str
    model_field: str
    streams: bool
    port: int = field(default_factory=free_port)

    def body(self, prompt: str, stream: bool = False) -> dict:
        body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
        if self.model_field:
            body["model"] = self.model_field
        if stream:
            body["stream"] = True
        return body


def peers(model_dir: Path, wanted: list[str]) -> list[Peer]:
    python = sys.executable
    bin_dir = Path(python).parent
    every = {
        "naive": lambda port: Peer("naive", [python, str(ROOT / "bench/peers/naive_server.py"), str(model_dir), str(port)],
                                   "/readyz", "/v1/completions", "", False, port),
        "litserve": lambda port: Peer("litserve", [python, str(ROOT / "bench/peers/litserve_server.py"), str(model_dir),
                                      str(port)], "/health", "/predict", "", False, port),
        "transformers-serve": lambda port: Peer(
            "transformers-serve", [str(bin_dir / "transformers"), "serve", str(model_dir), "--continuous-batching",
                                   "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                                   "--log-level", "warning"],
            "/health", "/v1/completions", str(model_dir), True, port),
        "ours": lambda port: Peer(
            "ours", [str(bin_dir / "inference-server"), "--model-dir", str(model_dir), "--no-auth", "--port", str(port),
                     "--max-batch-size", "32", "--max-wait-ms", "10", "--max-queue", "1024", "--log-level", "warning"],
            "/readyz", "/v1/completions", "platform/demo-llama-tiny", True, port),
    }  # fmt: skip
    return [every[name](free_port()) for name in [*wanted, "ours"]]


class RssSampler:
    """Peak resident memory of a process and its children, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


async def one(client: httpx.AsyncClient, peer: Peer, prompt: str, stream: bool) -> tuple[float, float, int]:
    """(latency, time to first token, generated tokens) of one request."""
    started = time.perf_counter()
    if stream:
        first = None
        async with client.stream("POST", peer.url_path, json=peer.body(prompt, stream=True)) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if first is None and line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and chunk["choices"][0].get("text"):
                        first = time.perf_counter() - started
        latency = time.perf_counter() - started
        return latency, first if first is not None else latency, MAX_TOKENS
    response = await client.post(peer.url_path, json=peer.body(prompt))
    response.raise_for_status()
    latency = time.perf_counter() - started
    body = response.json()
    tokens = (body.get("usage") or {}).get("completion_tokens", MAX_TOKENS)
    return latency, latency, tokens


async def load(peer: Peer, concurrency: int, count: int, stream: bool) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{peer.port}", timeout=300, limits=limits) as client:
        for prompt in PROMPTS[:8]:  # warm-up, not measured
            await one(client, peer, prompt, False)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(PROMPTS[i % len(PROMPTS)])
        results: list[tuple[float, float, int]] = []

        async def worker() -> None:
            while not queue.empty():
                results.append(await one(client, peer, queue.get_nowait(), stream))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    return {
        "rps": len(results) / elapsed,
        "tps": sum(r[2] for r in results) / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "ttft": statistics.median(r[1] for r in results),
    }


def wait_ready(peer: Peer, process: subprocess.Popen, timeout: float = 180) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{peer.name} exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{peer.port}{peer.ready_path}", timeout=1).status_code == 200:
                return time.monotonic()
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{peer.name} not ready within {timeout} s")


def measure(peer: Peer, log_dir: Path, quick: bool) -> dict:
    log = (log_dir / f"{peer.name}.log").open("w")
    process = subprocess.Popen(peer.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = RssSampler(process.pid)
    result: dict = {"levels": {}}
    try:
        wait_ready(peer, process)
        if peer.name == "ours":  # the very first request after readiness, before any other traffic
            started = time.perf_counter()
            httpx.post(f"http://127.0.0.1:{peer.port}{peer.url_path}", json=peer.body(PROMPTS[0]), timeout=60)
            result["first_after_ready"] = time.perf_counter() - started
            steady = []
            for prompt in PROMPTS[:16]:
                started = time.perf_counter()
                httpx.post(f"http://127.0.0.1:{peer.port}{peer.url_path}", json=peer.body(prompt), timeout=60)
                steady.append(time.perf_counter() - started)
            result["steady_median"] = statistics.median(steady)
        for concurrency, count in REQUESTS.items():
            count = count // 4 if quick else count
            level = asyncio.run(load(peer, concurrency, count, stream=False))
            if peer.streams:
                level["ttft"] = asyncio.run(load(peer, concurrency, max(8, count // 4), stream=True))["ttft"]
            result["levels"][concurrency] = level
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        result["peak_rss_mib"] = sampler.stop() / 2**20
        log.close()
    return result


def median_result(runs: list[dict]) -> dict:
    """Per metric, the median over rounds (robust to one disturbed round on a small machine)."""
    merged: dict = {"levels": {}, "rounds": len(runs), "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}
    for concurrency in runs[0]["levels"]:
        merged["levels"][concurrency] = {
            key: statistics.median(r["levels"][concurrency][key] for r in runs) for key in runs[0]["levels"][concurrency]
        }
    for key in ("first_after_ready", "steady_median"):
        if key in runs[0]:
            merged[key] = statistics.median(r[key] for r in runs)
    if "first_after_ready" in runs[0]:
        merged["first_ratio_per_round"] = [r["first_after_ready"] / r["steady_median"] for r in runs]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", nargs="*", default=["naive", "litserve", "transformers-serve"])
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests (smoke run)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds; each round starts every server afresh, peers interleaved; medians reported")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "inference_image/src"))
    from inference_server.demo import build_demo_model

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model_dir = build_demo_model(work / "model")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}; demo model, CPU; max_tokens {MAX_TOKENS}, greedy; "
          f"requests per level {REQUESTS if not args.quick else {c: n // 4 for c, n in REQUESTS.items()}}\n")  # fmt: skip
    rounds: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    for round_number in range(args.repeats):
        for peer in peers(model_dir, args.peers):
            if peer.name in errors:
                continue
            print(f"... round {round_number + 1}: {peer.name}", file=sys.stderr, flush=True)
            try:
                rounds.setdefault(peer.name, []).append(measure(peer, work, args.quick))
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not hidden
                errors[peer.name] = f"{type(exc).__name__}: {exc}"
    results = {name: median_result(runs) for name, runs in rounds.items()}
    results.update({name: {"error": error} for name, error in errors.items()})
    ours = results["ours"]
    header = f"{'server':20} {'conc':>4} {'req/s':>8} {'tok/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ttft ms':>8} " \
             f"{'rss MiB':>8} {'ours/peer req/s':>16} {'p99 ours<=peer':>15}"  # fmt: skip
    print(f"medians over {args.repeats} rounds; peak RSS is the largest seen\n")
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        if "error" in result:
            print(f"{name:20} could not run: {result['error']}")
            continue
        for concurrency, level in result["levels"].items():
            ratio = ""
            if name != "ours" and "levels" in ours:
                mine = ours["levels"][concurrency]
                ratio = f"{mine['rps'] / level['rps']:16.2f} {'yes' if mine['p99'] <= level['p99'] else 'NO':>15}"
            print(f"{name:20} {concurrency:4d} {level['rps']:8.1f} {level['tps']:8.0f} {level['p50'] * 1000:8.0f} "
                  f"{level['p99'] * 1000:8.0f} {level['ttft'] * 1000:8.0f} {result['peak_rss_mib']:8.0f} {ratio}")  # fmt: skip
    if "first_after_ready" in ours:
        ratio = ours["first_after_ready"] / ours["steady_median"]
        per_round = ", ".join(f"{r:.2f}" for r in ours["first_ratio_per_round"])
        print(f"\nours: first request after /readyz {ours['first_after_ready'] * 1000:.0f} ms vs steady median "
              f"{ours['steady_median'] * 1000:.0f} ms = {ratio:.2f}x (target <= 1.2x; per round: {per_round})")  # fmt: skip
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {work / 'results.json'}")


if __name__ == "__main__":
    main()

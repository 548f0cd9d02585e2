"""Model mirror benchmark: sync and download against a plain S3 copy, re-sync, memory vs file size.

Everything on loopback, one run: the upstream is tests/fake_hub.py (a Hub stand-in serving
from memory), S3 is moto's server, the mirror app and the sync run as `platformctl mirror`
subprocesses (their RSS is sampled alone). The peer is what `aws s3 cp` does: boto3's
managed transfer of the same bytes to and from the same S3.

    python bench/mirror_bench.py [--repo-mib 500] [--rss-sizes 64 256 512]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_hub import FakeHub  # noqa: E402

PLATFORMCTL = str(Path(sys.executable).parent / "platformctl")
MIB = 1024 * 1024


def payload(size: int, seed: int) -> bytes:
    """Incompressible, reproducible bytes (a stand-in for weights)."""
    generator = random.Random(seed)
    return b"".join(generator.randbytes(min(MIB, size - offset)) for offset in range(0, size, MIB))


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(seconds, peak RSS bytes, stdout) of a subprocess."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    handle = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, handle.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {stderr[-2000:]}")
    return time.perf_counter() - started, peak, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo-mib", type=int, default=500)
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[64, 256, 512])
    args = parser.parse_args()

    import logging

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    s3 = boto3.client("s3")

    # A repo like a real one: config and tokenizer, weights in two LFS shards.
    total = args.repo_mib * MIB
    files = {"config.json": b'{"model_type": "llama"}', "tokenizer.json": payload(2 * MIB, 1),
             "model-00001-of-00002.safetensors": payload(total * 3 // 5, 2),
             "model-00002-of-00002.safetensors": payload(total - total * 3 // 5 - 2 * MIB, 3)}  # fmt: skip
    repo_bytes = sum(len(d) for d in files.values())
    hub = FakeHub("bench/model", "a" * 40, files)
    upstream = hub.start()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}; "
          f"loopback upstream and S3 (moto); repo {repo_bytes / MIB:.0f} MiB in {len(files)} files\n")  # fmt: skip

    s3.create_bucket(Bucket="mirror")
    sync = [PLATFORMCTL, "mirror", "sync", "--bucket", "mirror", "--repo", "bench/model@main", "--upstream",
            upstream, "--no-progress"]  # fmt: skip
    sync_s, sync_rss, _ = run_measured(sync, env)
    resync_s, _, resync_out = run_measured(sync, env)
    moved = resync_out.split("already stored, ")[1].split(" bytes")[0]

    # The peer: the same bytes through boto3's managed transfer (what `aws s3 cp` uses).
    s3.create_bucket(Bucket="plain")
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch)
        for name, data in files.items():
            (local / name).write_bytes(data)
        started = time.perf_counter()
        for name in files:
            s3.upload_file(str(local / name), "plain", name)
        plain_up_s = time.perf_counter() - started
        started = time.perf_counter()
        for name in files:
            s3.download_file("plain", name, str(local / f"{name}.down"))
        plain_down_s = time.perf_counter() - started

    # Downloads through the mirror app, as a client does.
    from tests.loopback import free_port, wait_until_ok

    app_port = free_port()
    server = subprocess.Popen([PLATFORMCTL, "mirror", "serve", "--bucket", "mirror", "--port", str(app_port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until_ok(f"http://127.0.0.1:{app_port}/healthz")
        from huggingface_hub import snapshot_download

        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            path = snapshot_download("bench/model", revision="main", endpoint=f"http://127.0.0.1:{app_port}",
                                     cache_dir=cache)  # fmt: skip
            download_s = time.perf_counter() - started
            identical = all((Path(path) / n).read_bytes() == d for n, d in files.items())
    finally:
        server.terminate()
        server.wait(10)

    print(f"{'operation':38} {'seconds':>8} {'MiB/s':>8}   peer (boto3 managed transfer)")
    print("-" * 96)
    print(f"{'first sync (download+verify+upload)':38} {sync_s:8.2f} {repo_bytes / MIB / sync_s:8.1f}   "
          f"upload only: {plain_up_s:.2f} s, {repo_bytes / MIB / plain_up_s:.1f} MiB/s "
          f"(ours/peer time {sync_s / plain_up_s:.2f}x)")  # fmt: skip
    print(f"{'re-sync, unchanged':38} {resync_s:8.2f} {'':>8}   blob bytes moved: {moved}")
    print(f"{'snapshot_download through the mirror':38} {download_s:8.2f} {repo_bytes / MIB / download_s:8.1f}   "
          f"download only: {plain_down_s:.2f} s, {repo_bytes / MIB / plain_down_s:.1f} MiB/s "
          f"(ours/peer time {download_s / plain_down_s:.2f}x); byte-identical: {identical}")  # fmt: skip
    print(f"\npeak RSS of the sync process: {sync_rss / MIB:.0f} MiB for the {repo_bytes / MIB:.0f} MiB repo")

    # Memory against file size: one-file repos of growing size, synced into fresh buckets.
    hub.stop()
    print(f"\n{'single file MiB':>16} {'sync peak RSS MiB':>18}")
    for index, size in enumerate(args.rss_sizes):
        one = FakeHub("bench/one", f"{index + 1:040d}", {"weights.safetensors": payload(size * MIB, 10 + index)})
        url = one.start()
        s3.create_bucket(Bucket=f"rss-{index}")
        _, peak, _ = run_measured([PLATFORMCTL, "mirror", "sync", "--bucket", f"rss-{index}", "--repo",
                                   "bench/one@main", "--upstream", url, "--no-progress"], env)  # fmt: skip
        print(f"{size:16d} {peak / MIB:18.0f}")
        one.stop()
    moto.stop()


if __name__ == "__main__":
    threading.excepthook = lambda args: None  # server threads ending at shutdown are not results
    main()

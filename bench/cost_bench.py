"""How long the offline estimate adds to the offline plan (target: < 2 s for prod).

Both are fresh `platformctl` processes, as a user or the PR workflow runs them:
`plan --stack prod --format json` against `cost estimate --stack prod --format json`.

    python bench/cost_bench.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "platformctl")


def _time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--stack", default="prod")
    args = parser.parse_args()
    plan = [CLI, "plan", "--stack", args.stack, "--format", "json"]
    estimate = [CLI, "cost", "estimate", "--stack", args.stack, "--format", "json"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    results = {}
    for label, command in (("plan", plan), ("estimate (plan + pricing)", estimate)):
        _time(command)  # warm caches
        results[label] = [_time(command) for _ in range(args.runs)]
    plan_median = statistics.median(results["plan"])
    estimate_median = statistics.median(results["estimate (plan + pricing)"])
    for label, samples in results.items():
        print(f"{label:28} median {statistics.median(samples):6.2f} s  (min {min(samples):.2f}, max {max(samples):.2f})")
    extra = estimate_median - plan_median
    print(f"estimate beyond the plan: {extra:+.2f} s (target < 2 s: {'ok' if extra < 2 else 'MISSED'})")


if __name__ == "__main__":
    main()

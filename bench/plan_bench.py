"""Offline plan wall time per stack, side by side with its floor and the 5 s target.

Each sample is a fresh `platformctl plan --stack S --format json` process, so the
time includes interpreter start and imports, as a user sees it. The floor is a
fresh process that only imports pulumi, pulumi_aws and the program's modules: no
plan can be faster. A real `pulumi preview` cannot run here (no CLI, no account);
it adds plugin start-up and AWS round trips on top, and is not compared.

    python bench/plan_bench.py [--runs 7]
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
TARGET_SECONDS = 5.0
FLOOR = "import pulumi, pulumi_aws, pulumi_aws.ec2, pulumi_aws.iam, pulumi_aws.cloudwatch, components.network"


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cli = str(Path(sys.executable).parent / "platformctl")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")  # fmt: skip
    print(f"{args.runs} runs each, fresh process per run; median (min-max) seconds\n")
    rows = [("floor: imports only", [sys.executable, "-c", FLOOR])]
    for stack in ("dev", "staging", "prod"):
        rows.append((f"platformctl plan {stack}", [cli, "plan", "--stack", stack, "--format", "json"]))
    print(f"{'what':28} {'median':>8} {'min':>7} {'max':>7}   {'target':>6}")
    for label, command in rows:
        _time(command)  # warm the page cache and .pyc files
        samples = [_time(command) for _ in range(args.runs)]
        median = statistics.median(samples)
        verdict = "" if label.startswith("floor") else ("ok" if median < TARGET_SECONDS else "MISSED")
        target = "" if label.startswith("floor") else f"<{TARGET_SECONDS:.0f}s {verdict}"
        print(f"{label:28} {median:8.2f} {min(samples):7.2f} {max(samples):7.2f}   {target}")


if __name__ == "__main__":
    main()

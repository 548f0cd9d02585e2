"""Offline plan wall time per stack, side by side with its floor and the 5 s target.

Each sample is a fresh `platformctl plan --stack S --format json` process, so the
time includes interpreter start and imports, as a user sees it. The floor is a
fresh process that only loads the SDK classes the prod plan declares (pulumi-aws and
pulumi-kubernetes load their generated modules lazily, on first use): no plan of this
program can be faster. A real `pulumi preview` cannot run here (no CLI, no account);
it adds plugin start-up and AWS round trips on top, and is not compared.

    python bench/plan_bench.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 5.0
FLOOR = """
import importlib, json, keyword, sys
import components.eks, components.gpu, components.inference, components.mirror.component, components.network
for token in json.load(open(sys.argv[1])):
    package, module, name = token.split(":")
    module = module.split("/")[0]
    module = module + "_" if keyword.iskeyword(module) else module  # pulumi_aws.lambda_
    path = f"pulumi_{package}" + ("" if module == "index" else "." + module.replace("/", "."))
    if package == "kubernetes":
        group, _, version = token.split(":")[1].rpartition("/")
        path = f"pulumi_kubernetes.{group.split('.')[0] or 'core'}.{version}"  # networking.k8s.io -> networking
        try:
            getattr(importlib.import_module(path), name)
        except (ImportError, AttributeError):  # a custom resource kind (monitoring.coreos.com/v1)
            path, name = "pulumi_kubernetes.apiextensions", "CustomResource"
    if package == "docker-build":
        path = "pulumi_docker_build"
    getattr(importlib.import_module(path), name)
"""


def _types_used(cli: str) -> str:
    """The resource types of the prod plan, written to a file for the floor to load."""
    out = subprocess.run([cli, "plan", "--stack", "prod", "--format", "json"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    tokens = sorted({r["type"] for r in json.loads(out)["resources"] if r["custom"] and not r["type"].startswith("pulumi:")})
    path = Path(tempfile.mkdtemp()) / "types.json"
    path.write_text(json.dumps(tokens))
    return str(path)


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
    rows = [("floor: SDK classes only", [sys.executable, "-c", FLOOR, _types_used(cli)])]
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

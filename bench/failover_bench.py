"""Failover benchmark: time from a fault to the VIP answering on the new primary, ours vs keepalived's defaults.

One run, both configurations side by side, in the network-namespace lab of the tests
(tests/failover/lab.py: Debian keepalived and Redis, the real node agent, moto as EC2):

- ours: the shipped defaults (VRRPv3, 0.1 s adverts, health check every 1 s, fall 2);
- keepalived's default timing: VRRPv2, 1 s adverts, the same health check.

For each fault (keepalived killed with SIGKILL, the primary's link down, Redis crashed)
the clock starts at the fault and stops at the first client write through the VIP that
the new primary accepts; the client writes every 5 ms and counts a write durable only when
``WAIT 1`` saw a replica. Split brain (VRRP cut both ways) reports how fast both hold
MASTER and how fast one primary remains after healing. Each configuration runs in one lab,
so runs follow each other as repeated failovers of the same pair.

    sudo python bench/failover_bench.py [--runs 5] [--sweep 0.05 0.1 0.25 0.5]

``--sweep`` also times the killed-keepalived fault at other advert intervals (VRRPv3), the
measurement behind the default interval.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.config import VrrpConfig  # noqa: E402
from tests.failover.lab import Lab, keepalived_default, ours, run_scenario  # noqa: E402

FAULTS = ("keepalived-killed", "link-down", "redis-crashed")


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def measure(name: str, vrrp, runs: int, scenarios=(*FAULTS, "split-brain")) -> dict[str, dict[str, list]]:
    results: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory(prefix=f"failover-{name}-") as workdir, Lab(Path(workdir), vrrp,
                                                                                 tag=f"fb{name[:4]}") as lab:  # fmt: skip
        for scenario in scenarios:
            rows = results.setdefault(scenario, {"seconds": [], "lost": [], "acked": [], "heal": []})
            for run in range(runs):
                outcome = run_scenario(lab, scenario)
                rows["lost"].append(outcome["lost"])
                rows["acked"].append(outcome["acked"])
                if scenario == "split-brain":
                    rows["seconds"].append(outcome["both_master_after"])
                    rows["heal"].append(outcome["settled_after_heal"])
                else:
                    rows["seconds"].append(outcome["failover_seconds"])
                print(f"  {name:9} {scenario:18} run {run + 1}: {json.dumps(outcome)}", flush=True)
        moves = [json.loads(line) for node in "ab" for line in (Path(workdir) / node / "events.jsonl").read_text().splitlines()]
        results["vip-move"] = {"seconds": [e["call_seconds"] + e["confirm_seconds"] for e in moves if e["event"] == "vip_moved"]}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sweep", type=float, nargs="*", default=[], help="advert intervals to time (s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"kernel {platform.release()}, Python {platform.python_version()}")  # fmt: skip
    ours_results = measure("ours", ours(), args.runs)
    default_results = measure("default", keepalived_default(), args.runs)
    print(f"\nmedian of {args.runs} runs, seconds from fault to the VIP answering on the new primary")
    print(f"{'scenario':22} {'ours':>8} {'keepalived default':>20} {'ours lost':>10} {'default lost':>13}")
    for scenario in FAULTS:
        o, d = ours_results[scenario], default_results[scenario]
        print(f"{scenario:22} {_median(o['seconds']):>8} {_median(d['seconds']):>20} "
              f"{sum(o['lost']):>10} {sum(d['lost']):>13}")  # fmt: skip
    o, d = ours_results["split-brain"], default_results["split-brain"]
    print(f"{'split brain: both MASTER':22} {_median(o['seconds']):>8} {_median(d['seconds']):>20}")
    print(f"{'split brain: healed':22} {_median(o['heal']):>8} {_median(d['heal']):>20} "
          f"{sum(o['lost']):>10} {sum(d['lost']):>13}")  # fmt: skip
    print(f"{'EC2 VIP move (moto)':22} {_median(ours_results['vip-move']['seconds']):>8} "
          f"{_median(default_results['vip-move']['seconds']):>20}")  # fmt: skip
    if args.sweep:
        print(f"\nadvert interval sweep (VRRPv3), keepalived killed, median of {args.runs} runs")
        for interval in args.sweep:
            swept = measure(f"s{interval:g}", VrrpConfig(advert_interval=interval, script_user="root"), args.runs,
                            scenarios=("keepalived-killed",))  # fmt: skip
            print(f"  advert_int {interval:<5g} {_median(swept['keepalived-killed']['seconds']):>6} s   "
                  f"lost {sum(swept['keepalived-killed']['lost'])}", flush=True)
    acked = sum(sum(r["acked"]) for r in (*ours_results.values(), *default_results.values()) if "acked" in r)
    print(f"\nwrites acknowledged by a replica (WAIT 1): {acked}; lost: "
          f"{sum(sum(r['lost']) for r in (*ours_results.values(), *default_results.values()) if 'lost' in r)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""VPN failover benchmark: tunnel 1 cut, how long until traffic flows over tunnel 2.

Runs the namespace lab of the tests (tests/vpn/lab.py: Debian charon with userspace IPsec,
our rendered on-prem gateway, an emulated AWS side with AWS's 30 s DPD timeout), side by side:

- ours: the rendered charon settings (retransmissions give up after 14.2 s);
- charon's defaults: the same files without strongswan.d/aws-vpn.conf (5 retransmissions
  from 4 s, factor 1.8: 165 s).

Per run, a fresh lab: both tunnels up, tunnel 1 made the one carrying traffic, then cut
(everything to and from AWS's tunnel-1 endpoint dropped on the gateway). A UDP echo from
the on-prem LAN to the VPC every 0.1 s times the outage; the updown hook taking tunnel 1's
interface down times the gateway's own detection.

    sudo python bench/vpn_failover_bench.py [--stack dev] [--runs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.vpn.tunnels import ON_PREM_RETRANSMISSION, Retransmission, on_prem_dead_peer_seconds  # noqa: E402
from platformctl.common import load_stack_config  # noqa: E402
from tests.vpn.lab import VpnLab, wait_for  # noqa: E402

CHARON_DEFAULT = Retransmission(timeout=4.0, base=1.8, tries=5)
LIMIT_SECONDS = 400


def one_run(stack: str, rendered_timing: bool, workdir: Path) -> dict[str, float]:
    lab = VpnLab(load_stack_config(stack, ROOT), workdir)
    try:
        lab.build()
        lab.start(rendered_timing=rendered_timing)
        wait_for(lambda: lab.established(lab.onprem) == {1, 2}, 20, "both tunnels up")
        lab.start_echo()
        lab.make_active(1)
        wait_for(lambda: lab.established(lab.onprem) == {1, 2} and lab.echo(1) == 1, 20, "tunnel 1 carrying traffic")
        before = lab.packets_out(1)
        assert lab.echo(3) == 3 and lab.packets_out(1) - before >= 3
        tunnel1 = lab.gateway.tunnels[0].name
        lab.cut(1)
        start = time.monotonic()
        detected = recovered = None
        while time.monotonic() - start < LIMIT_SECONDS and (detected is None or recovered is None):
            if detected is None and not lab.link_up(tunnel1):
                detected = time.monotonic() - start
            if recovered is None and lab.echo(1, timeout=0.1) == 1:
                recovered = time.monotonic() - start
            time.sleep(0.05)
        if detected is None or recovered is None:
            raise RuntimeError(f"no failover within {LIMIT_SECONDS} s (detected {detected}, recovered {recovered})")
        return {"gateway_detects": detected, "traffic_back": recovered}
    finally:
        lab.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces): sudo .venv/bin/python bench/vpn_failover_bench.py")
    config = load_stack_config(args.stack, ROOT)
    dpd_delay, aws_timeout = config.vpn.on_prem.dpd_delay_seconds, config.vpn.ike.dpd_timeout_seconds
    results: dict[str, list[dict[str, float]]] = {"ours": [], "charon-default": []}
    for run in range(args.runs):
        for name, rendered in (("ours", True), ("charon-default", False)):
            with tempfile.TemporaryDirectory(prefix=f"vpn-bench-{name}-") as workdir:
                results[name].append(one_run(args.stack, rendered, Path(workdir)))
                print(f"run {run + 1} {name}: {results[name][-1]}", flush=True)
    print(f"\nVPN failover, stack {args.stack}: tunnel 1 cut (median of {args.runs}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()})")
    print(f"{'':32} {'ours':>10} {'charon default':>16}")
    expected = {"ours": on_prem_dead_peer_seconds(dpd_delay, ON_PREM_RETRANSMISSION),
                "charon-default": on_prem_dead_peer_seconds(dpd_delay, CHARON_DEFAULT)}
    print(f"{'gateway gives up (computed) s':32} {expected['ours']:>10.1f} {expected['charon-default']:>16.1f}")
    for key, label in (("gateway_detects", "gateway drops tunnel 1 s"), ("traffic_back", "traffic over tunnel 2 s")):
        values = {n: statistics.median(r[key] for r in rows) for n, rows in results.items()}
        print(f"{label:32} {values['ours']:>10.1f} {values['charon-default']:>16.1f}")
    print(f"(the emulated AWS side drops tunnel 1 after its DPD timeout, {aws_timeout} s, in both)")
    if args.json:
        args.json.write_text(json.dumps({"stack": args.stack, "runs": results, "computed": expected}, indent=2))


if __name__ == "__main__":
    main()

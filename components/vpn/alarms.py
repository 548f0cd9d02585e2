"""The VPN's CloudWatch alarms: which TunnelState series, what threshold, how severe (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAMESPACE = "AWS/VPN"
PERIOD_SECONDS = 60


@dataclass(frozen=True)
class TunnelAlarm:
    name: str
    description: str
    severity: str  # "critical" pages; "warning" is redundancy lost, service still up
    tunnels: tuple[int, ...]  # which tunnels' TunnelState series the alarm reads
    evaluation_periods: int


def tunnel_alarms() -> list[TunnelAlarm]:
    """One alarm per tunnel (redundancy lost) and one for both down (the private cloud is cut off).

    TunnelState is 1 while a tunnel is up (with BGP: while its session is ESTABLISHED),
    else 0. A series that stops reporting counts as down (FILL with 0).
    """
    return [
        TunnelAlarm("tunnel1-down", "VPN tunnel 1 is down: traffic runs on tunnel 2 alone (no redundancy)",
                    "warning", (1,), 3),
        TunnelAlarm("tunnel2-down", "VPN tunnel 2 is down: traffic runs on tunnel 1 alone (no redundancy)",
                    "warning", (2,), 3),
        TunnelAlarm("both-tunnels-down", "Both VPN tunnels are down: the private cloud is cut off from AWS",
                    "critical", (1, 2), 2),
    ]  # fmt: skip


def alarm_metric_queries(alarm: TunnelAlarm, vpn_id: Any, tunnel_addresses: tuple[Any, Any]) -> list[dict[str, Any]]:
    """``metric_queries`` of a MetricAlarm: each tunnel's TunnelState (Maximum per minute), then the best of them.

    ``vpn_id`` and the tunnels' outside addresses may be Pulumi outputs (known after deployment).
    """
    queries: list[dict[str, Any]] = [
        {"id": f"t{tunnel}", "return_data": False,
         "metric": {"namespace": NAMESPACE, "metric_name": "TunnelState", "period": PERIOD_SECONDS, "stat": "Maximum",
                    "dimensions": {"VpnId": vpn_id, "TunnelIpAddress": tunnel_addresses[tunnel - 1]}}}
        for tunnel in alarm.tunnels
    ]  # fmt: skip
    series = ", ".join(f"FILL(t{tunnel}, 0)" for tunnel in alarm.tunnels)
    queries.append({"id": "up", "expression": f"MAX([{series}])", "label": f"{alarm.name} (1 = up)", "return_data": True})
    return queries

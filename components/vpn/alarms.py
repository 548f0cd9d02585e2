"""The VPN's CloudWatch alarms: which TunnelState series, what threshold, how severe (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.alerting.cloudwatch_exporter import ExportedSignals, StaticJob, dimension_label, prometheus_name
from components.alerting.rules import Alert

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


# --------------------------------------------------------------------------- in Prometheus (YACE)

_EXPORTED = (("TunnelState", "Maximum"), ("TunnelDataIn", "Sum"), ("TunnelDataOut", "Sum"))
_STATE = prometheus_name(NAMESPACE, "TunnelState", "Maximum")


def exporter_jobs(name_prefix: str, vpn_id: Any, tunnel_addresses: tuple[Any, Any]) -> tuple[StaticJob, ...]:
    """One exporter job per tunnel: TunnelState and the bytes each way, this connection's tunnels only."""
    return tuple(StaticJob(f"{name_prefix}-vpn-tunnel{index}", NAMESPACE,
                           {"VpnId": vpn_id, "TunnelIpAddress": address}, _EXPORTED)
                 for index, address in enumerate(tunnel_addresses, start=1))  # fmt: skip


def prometheus_alerts() -> tuple[Alert, ...]:
    """A tunnel down (redundancy lost) and both down; each mirrors its CloudWatch alarm.

    A tunnel that stops reporting exports 0 (nilToZero): down, like the alarms' FILL(…, 0).
    Alertmanager inhibits the per-tunnel alert while both are down (alertmanager.py).
    """
    vpn, tunnel = dimension_label("VpnId"), dimension_label("TunnelIpAddress")
    return (
        Alert("VpnTunnelDown", "vpn", f"max by ({vpn}, {tunnel}) ({_STATE}) < 1", "3m", "warning",
              "A VPN tunnel is down: no redundancy to the private cloud",
              f"Tunnel {{{{ $labels.{tunnel} }}}} of {{{{ $labels.{vpn} }}}} is down; traffic runs on the other alone.",
              twins=("tunnel1-down", "tunnel2-down")),
        Alert("VpnBothTunnelsDown", "vpn", f"max by ({vpn}) ({_STATE}) < 1", "2m", "critical",
              "Both VPN tunnels are down: the private cloud is cut off",
              f"No tunnel of {{{{ $labels.{vpn} }}}} is up: nothing reaches the private cloud.",
              twins=("both-tunnels-down",)),
    )  # fmt: skip


def dashboard() -> tuple[str, str, tuple]:
    vpn, tunnel = dimension_label("VpnId"), dimension_label("TunnelIpAddress")
    data_in = prometheus_name(NAMESPACE, "TunnelDataIn", "Sum")
    data_out = prometheus_name(NAMESPACE, "TunnelDataOut", "Sum")
    legend = f"{{{{{tunnel}}}}}"
    return ("platform-vpn", "Site-to-site VPN", (
        ("Tunnel up (1)", "short", f"max by ({vpn}, {tunnel}) ({_STATE})", legend),
        # The Sum over each 60 s period, per second.
        ("Bytes per second from the private cloud", "Bps", f"sum by ({tunnel}) ({data_in}) / 60", legend),
        ("Bytes per second to the private cloud", "Bps", f"sum by ({tunnel}) ({data_out}) / 60", legend),
    ))  # fmt: skip


def exported_signals(name_prefix: str, vpn_id: Any, tunnel_addresses: tuple[Any, Any]) -> ExportedSignals:
    return ExportedSignals(exporter_jobs(name_prefix, vpn_id, tunnel_addresses), prometheus_alerts(), dashboard())

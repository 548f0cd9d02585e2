"""The alerts and dashboards components add through the CloudWatch exporter, from a stack's config."""

from __future__ import annotations

from components.alerting.cloudwatch import spot_interruption_signals
from components.alerting.rules import Alert
from components.config import PlatformConfig
from components.failover import policies as failover
from components.vpn import alarms as vpn


def _spot(config: PlatformConfig):
    return spot_interruption_signals("gpu-dev", "interruptions", config.alerting.thresholds.spot_interruptions_per_hour)


def signal_alerts(config: PlatformConfig) -> list[Alert]:
    found: list[Alert] = list(_spot(config).alerts)
    if config.failover is not None:
        found += failover.prometheus_alerts(config.failover.redis.lag_alarm_seconds)
    if config.vpn is not None:
        found += vpn.prometheus_alerts()
    return found


def signal_dashboards(config: PlatformConfig) -> list:
    return ([_spot(config).dashboard] + ([failover.dashboard()] if config.failover is not None else [])
            + ([vpn.dashboard()] if config.vpn else []))  # fmt: skip

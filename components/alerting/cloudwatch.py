"""CloudWatch alarms for AWS-side signals (pure specs; each component declares its own).

Severity picks the topic (``components.alerting.SEVERITY_TOPICS``): critical pages, warning
opens a ticket. Thresholds follow the service's documented metric semantics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.alerting.cloudwatch_exporter import ExportedSignals, StaticJob, dimension_label, prometheus_name
from components.alerting.rules import Alert


@dataclass(frozen=True)
class CloudWatchAlarm:
    name: str  # suffix of the alarm name and the child resource
    description: str
    namespace: str
    metric: str
    stat: str
    comparison: str
    threshold: float
    evaluation_periods: int
    severity: str  # critical | warning
    dimensions: dict[str, Any] = field(default_factory=dict)  # values may be Pulumi outputs
    period: int = 60
    treat_missing_data: str = "notBreaching"


def nat_gateway_alarms(az: str, nat_gateway_id: Any) -> list[CloudWatchAlarm]:
    """Port exhaustion (no new connections get out) and dropped packets at a NAT gateway."""
    dims = {"NatGatewayId": nat_gateway_id}
    return [
        CloudWatchAlarm(f"nat-{az}-port-allocation", f"NAT gateway in {az} cannot allocate source ports: new connections fail",
                        "AWS/NATGateway", "ErrorPortAllocation", "Sum", "GreaterThanThreshold", 0, 2, "critical", dims),
        CloudWatchAlarm(f"nat-{az}-packets-dropped", f"NAT gateway in {az} drops packets",
                        "AWS/NATGateway", "PacketsDropCount", "Sum", "GreaterThanThreshold", 100, 5, "warning", dims),
    ]  # fmt: skip


def firehose_alarms(stream_name: Any, buffering_interval_seconds: int, name: str = "firehose",
                    records: str = "log records") -> list[CloudWatchAlarm]:  # fmt: skip
    """Records not reaching S3: delivery failing, or the oldest record older than a few buffer intervals."""
    dims = {"DeliveryStreamName": stream_name}
    freshness = max(900, 3 * buffering_interval_seconds)
    return [
        CloudWatchAlarm(f"{name}-delivery-failing", f"Firehose fails to deliver {records} to S3",
                        "AWS/Firehose", "DeliveryToS3.Success", "Minimum", "LessThanThreshold", 1, 3, "warning", dims,
                        period=300),
        CloudWatchAlarm(f"{name}-data-stale", f"{records.capitalize()} wait more than {freshness} s in Firehose",
                        "AWS/Firehose", "DeliveryToS3.DataFreshness", "Maximum", "GreaterThanThreshold", freshness, 3,
                        "warning", dims, period=300),
    ]  # fmt: skip


def cloudfront_alarms(distribution_id: Any, five_xx_percent: float) -> list[CloudWatchAlarm]:
    """The mirror's edge answering with 5xx (CloudFront metrics live in us-east-1, Region=Global)."""
    return [CloudWatchAlarm("cdn-5xx-rate", f"More than {five_xx_percent:g} % of mirror downloads fail with 5xx",
                            "AWS/CloudFront", "5xxErrorRate", "Average", "GreaterThanThreshold", five_xx_percent, 5,
                            "warning", {"DistributionId": distribution_id, "Region": "Global"})]  # fmt: skip


def instance_status_alarms(node: str, instance_id: Any) -> list[CloudWatchAlarm]:
    """An EC2 instance failing its system or instance status check."""
    return [CloudWatchAlarm(f"{node}-status-check", f"Node {node} fails its EC2 status checks",
                            "AWS/EC2", "StatusCheckFailed", "Maximum", "GreaterThanOrEqualToThreshold", 1, 2, "warning",
                            {"InstanceId": instance_id}, treat_missing_data="breaching")]  # fmt: skip


def spot_interruption_alarms(queue_name: Any, per_hour: int) -> list[CloudWatchAlarm]:
    """Many spot interruption notices (and rebalance recommendations) in an hour: the pool is churning.

    EventBridge delivers each notice to the node termination handler's queue, so the queue's
    sent-message count is the interruption rate.
    """
    return [CloudWatchAlarm("spot-interruptions", f"More than {per_hour} spot interruption notices in an hour",
                            "AWS/SQS", "NumberOfMessagesSent", "Sum", "GreaterThanThreshold", per_hour, 1, "warning",
                            {"QueueName": queue_name}, period=3600)]  # fmt: skip


def spot_interruption_signals(name_prefix: str, queue_name: Any, per_hour: int) -> ExportedSignals:
    """The same queue count in Prometheus: an alert mirroring the alarm, a panel on the capacity dashboard.

    Five-minute sums (SQS reports every minute; five smooth out YACE's and Prometheus's
    unaligned scrapes): the hourly rate is their average over an hour, times 12.
    """
    sent = prometheus_name("AWS/SQS", "NumberOfMessagesSent", "Sum")
    job = StaticJob(f"{name_prefix}-spot-interruptions", "AWS/SQS", {"QueueName": queue_name},
                    (("NumberOfMessagesSent", "Sum"),), period=300, length=300)  # fmt: skip
    per_hour_expr = f"avg_over_time({sent}[1h]) * 12"
    queue = dimension_label("QueueName")
    alert = Alert("SpotInterruptionsHigh", "gpu", f"sum by ({queue}) ({per_hour_expr}) > {per_hour}", "0m", "warning",
                  "Spot GPU nodes are being interrupted often",
                  f"About {{{{ $value | humanize }}}} interruption notices in the last hour (limit {per_hour}): "
                  "the spot pool is churning; consider other instance types or more reserved capacity.",
                  twins=("spot-interruptions",))  # fmt: skip
    panel = ("Spot interruption notices per hour", "short", f"sum({per_hour_expr})", "notices")
    return ExportedSignals((job,), (alert,), ("platform-capacity", "", (panel,)))

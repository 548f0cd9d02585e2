"""IAM documents and CloudWatch alarms of the failover pair (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from components.alerting.cloudwatch_exporter import ExportedSignals, StaticJob, dimension_label, prometheus_name
from components.alerting.rules import Alert

METRIC_NAMESPACE = "Platform/Failover"  # where the node agents publish (agent.json metricNamespace)


def _doc(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def node_role_policy(*, mode: str, region: str, account_id: str, network_interface_id: str,
                     allocation_id: str | None, password_parameter_arn: str, audit_stream_arn: str | None = None) -> str:  # fmt: skip
    """One node's role: move the VIP to its own interface only, read the Redis password, publish
    metrics, put its audit events into the audit stream.

    Each node has its own role, so a node can take the VIP but never push it onto the
    other node's interface. Describe calls have no resource-level permissions in EC2.
    """
    eni_arn = f"arn:aws:ec2:{region}:{account_id}:network-interface/{network_interface_id}"
    if mode == "elasticIp":
        move = {"Sid": "TakeElasticIp", "Effect": "Allow", "Action": "ec2:AssociateAddress",
                "Resource": [f"arn:aws:ec2:{region}:{account_id}:elastic-ip/{allocation_id}", eni_arn]}  # fmt: skip
        describe = "ec2:DescribeAddresses"
    else:
        move = {"Sid": "TakeSecondaryIp", "Effect": "Allow", "Action": "ec2:AssignPrivateIpAddresses", "Resource": eni_arn}
        describe = "ec2:DescribeNetworkInterfaces"
    return _doc(
        move,
        {"Sid": "ReadPlacement", "Effect": "Allow", "Action": describe, "Resource": "*"},
        {"Sid": "ReadRedisPassword", "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": password_parameter_arn},
        {"Sid": "PublishPairMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}}},
        *([{"Sid": "PutAuditEvents", "Effect": "Allow", "Action": "firehose:PutRecord", "Resource": audit_stream_arn}]
          if audit_stream_arn else []),
    )  # fmt: skip


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm over both nodes' metrics, combined with metric math."""

    name: str
    description: str
    metric: str
    stat: str
    expression: str  # over ids a and b (node a's and node b's series)
    comparison: str
    threshold: float
    evaluation_periods: int
    treat_missing_data: str
    severity: str = "warning"  # critical pages; warning opens a ticket


def alarm_specs(lag_alarm_seconds: float) -> list[AlarmSpec]:
    """Split brain, no master, failover, failing health check, replication lag, no replica.

    A node that stops publishing counts as not master and unhealthy (FILL with 0), so a
    dead node or both being dead still raises the right alarm.
    """
    both = "FILL(a, 0) + FILL(b, 0)"
    return [
        AlarmSpec("split-brain", "Both nodes hold MASTER: two writable primaries (VRRP between them is cut)",
                  "IsMaster", "Maximum", both, "GreaterThanThreshold", 1, 1, "notBreaching", "critical"),
        AlarmSpec("no-master", "Neither node holds MASTER: the VIP answers nowhere",
                  "IsMaster", "Maximum", both, "LessThanThreshold", 1, 2, "breaching", "critical"),
        AlarmSpec("failover", "A node took over the VIP (failover or first election)",
                  "Failover", "Sum", both, "GreaterThanOrEqualToThreshold", 1, 1, "notBreaching"),
        AlarmSpec("health-check", "Redis failed its health check on a node (or the node stopped reporting)",
                  "HealthCheckOk", "Minimum", "MIN([FILL(a, 0), FILL(b, 0)])", "LessThanThreshold", 1, 2, "breaching"),
        AlarmSpec("replication-lag", f"Replica more than {lag_alarm_seconds:g} s behind the primary",
                  "ReplicationLagSeconds", "Maximum", "MAX([FILL(a, 0), FILL(b, 0)])", "GreaterThanThreshold",
                  lag_alarm_seconds, 1, "notBreaching"),
        AlarmSpec("no-replica", "The primary has no connected replica: a failover now would lose writes",
                  "ReplicasConnected", "Maximum", "MAX([FILL(a, 0), FILL(b, 0)])", "LessThanThreshold", 1, 3,
                  "breaching"),
    ]  # fmt: skip


def alarm_metric_queries(spec: AlarmSpec, pair: str, period: int = 60) -> list[dict[str, Any]]:
    """The MetricAlarm ``metric_queries``: one series per node and the expression that returns."""
    queries: list[dict[str, Any]] = [
        {"id": node, "return_data": False,
         "metric": {"namespace": METRIC_NAMESPACE, "metric_name": spec.metric, "period": period, "stat": spec.stat,
                    "dimensions": {"Pair": pair, "Node": node}}}
        for node in ("a", "b")
    ]  # fmt: skip
    queries.append({"id": "pair", "expression": spec.expression, "label": spec.name, "return_data": True})
    return queries


# --------------------------------------------------------------------------- in Prometheus (YACE)

_EXPORTED = (("IsMaster", "Maximum"), ("HealthCheckOk", "Minimum"), ("ReplicationLagSeconds", "Maximum"),
             ("ReplicasConnected", "Maximum"))  # fmt: skip


def exporter_jobs(pair: str) -> tuple[StaticJob, ...]:
    """One exporter job per node (static jobs match exact dimensions: this pair's nodes only)."""
    return tuple(StaticJob(f"{pair}-{node}", METRIC_NAMESPACE, {"Pair": pair, "Node": node}, _EXPORTED)
                 for node in ("a", "b"))  # fmt: skip


def _series(metric: str) -> str:
    stat = dict(_EXPORTED)[metric]
    return prometheus_name(METRIC_NAMESPACE, metric, stat)


def prometheus_alerts(lag_alarm_seconds: float) -> tuple[Alert, ...]:
    """Split brain, no master and replication lag over the exported series; each mirrors its CloudWatch alarm.

    A node that stops publishing exports 0 (nilToZero): not master, like the alarms' FILL(…, 0).
    """
    pair = dimension_label("Pair")
    masters = f"sum by ({pair}) ({_series('IsMaster')})"
    return (
        Alert("FailoverSplitBrain", "failover", f"{masters} > 1", "1m", "critical",
              "Both failover nodes hold the VIP role (split brain)",
              f"Pair {{{{ $labels.{pair} }}}} has two writable primaries: VRRP between the nodes is cut.",
              twins=("split-brain",)),
        Alert("FailoverNoMaster", "failover", f"{masters} < 1", "2m", "critical",
              "Neither failover node is master",
              f"Pair {{{{ $labels.{pair} }}}} has no primary: the VIP answers nowhere.", twins=("no-master",)),
        Alert("FailoverReplicationLagHigh", "failover",
              f"max by ({pair}) ({_series('ReplicationLagSeconds')}) > {lag_alarm_seconds:g}", "1m", "warning",
              "The failover replica is behind its primary",
              f"The replica of {{{{ $labels.{pair} }}}} is {{{{ $value }}}} s behind (limit {lag_alarm_seconds:g} s): "
              "a failover now would lose the writes in between.", twins=("replication-lag",)),
    )  # fmt: skip


def dashboard() -> tuple[str, str, tuple]:
    node, pair = dimension_label("Node"), dimension_label("Pair")
    legend = f"{{{{{pair}}}}} {{{{{node}}}}}"
    return ("platform-failover", "Failover pair", (
        ("Master (1) per node", "short", f"max by ({pair}, {node}) ({_series('IsMaster')})", legend),
        ("Health check passing (1) per node", "short", f"min by ({pair}, {node}) ({_series('HealthCheckOk')})", legend),
        ("Replication lag", "s", f"max by ({pair}, {node}) ({_series('ReplicationLagSeconds')})", legend),
        ("Replicas connected to the primary", "short", f"max by ({pair}) ({_series('ReplicasConnected')})",
         f"{{{{{pair}}}}}"),
    ))  # fmt: skip


def exported_signals(pair: str, lag_alarm_seconds: float) -> ExportedSignals:
    return ExportedSignals(exporter_jobs(pair), prometheus_alerts(lag_alarm_seconds), dashboard())

"""Alertmanager's configuration (pure): severity routes to the SNS topics, webhooks, grouping, inhibition.

Rendered into kube-prometheus-stack's ``alertmanager.config``; the tests run ``amtool
check-config`` on it and ``amtool config routes test`` for where each severity goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.alerting import SEVERITY_TOPICS
from components.alerting.rules import CLOUDWATCH_ORIGIN
from components.config import AlertingConfig

# Fast burns subsume slow ones; a node out of memory subsumes its high-memory warning;
# a node that is down subsumes the pod alerts of pods on it (they carry `node`); both VPN
# tunnels down subsumes each tunnel's alert; a pair with no master has no replication to lag.
INHIBIT_RULES = [
    {"source_matchers": ['alertname="InferenceErrorBudgetFastBurn"'],
     "target_matchers": ['alertname="InferenceErrorBudgetSlowBurn"'], "equal": ["namespace"]},
    {"source_matchers": ['alertname="InferenceLatencyBudgetFastBurn"'],
     "target_matchers": ['alertname=~"InferenceLatencyBudgetSlowBurn|InferenceLatencyP99High"'], "equal": ["namespace"]},
    {"source_matchers": ['alertname="NodeMemoryLow"'], "target_matchers": ['alertname="NodeMemoryHigh"'], "equal": ["instance"]},
    {"source_matchers": ['alertname=~"KubeNodeNotReady|KubeNodeUnreachable"'],
     "target_matchers": ['alertname=~"PodRestartingOften|InferenceReadinessFlapping"'], "equal": ["node"]},
    {"source_matchers": ['alertname="VpnBothTunnelsDown"'], "target_matchers": ['alertname="VpnTunnelDown"'],
     "equal": ["dimension_VpnId"]},
    {"source_matchers": ['alertname="FailoverNoMaster"'], "target_matchers": ['alertname="FailoverReplicationLagHigh"'],
     "equal": ["dimension_Pair"]},
]  # fmt: skip


def config(alerting: AlertingConfig, topic_arns: Mapping[str, str], region: str) -> dict[str, Any]:
    """The Alertmanager configuration; ``topic_arns`` maps severity -> SNS topic ARN."""
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    routes: list[dict[str, Any]] = [
        # kube-prometheus-stack's always-firing Watchdog proves the pipeline; it must not notify.
        {"receiver": "null", "matchers": ['alertname=~"Watchdog|InfoInhibitor"']},
    ]
    for hook in alerting.webhooks:
        receivers.append({"name": hook.name, "webhook_configs": [{"url": hook.url, "send_resolved": True}]})
        severities = "|".join(hook.severities)
        routes.append({"receiver": hook.name, "matchers": [f'severity=~"{severities}"'], "continue": True})
    # Their CloudWatch twins already published to the topics: webhooks only, not a second page.
    routes.append({"receiver": "null", "matchers": [f'origin="{CLOUDWATCH_ORIGIN}"']})
    for severity, topic in SEVERITY_TOPICS.items():
        receivers.append({"name": topic, "sns_configs": [{
            "topic_arn": topic_arns[severity], "sigv4": {"region": region}, "send_resolved": True,
            "subject": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})',
        }]})  # fmt: skip
        routes.append({"receiver": topic, "matchers": [f'severity="{severity}"'],
                       **({"repeat_interval": "1h"} if severity == "critical" else {})})  # fmt: skip
    return {
        "route": {"receiver": SEVERITY_TOPICS["warning"], "group_by": ["alertname", "namespace"], "group_wait": "30s",
                  "group_interval": "5m", "repeat_interval": "4h", "routes": routes},
        "inhibit_rules": [dict(rule) for rule in INHIBIT_RULES],
        "receivers": receivers,
    }  # fmt: skip


def publisher_policy(topic_arns: list[str], key_arn: str) -> dict[str, Any]:
    """Alertmanager's IRSA role: publish to the alert topics (encrypted with the alerting key)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "PublishAlerts", "Effect": "Allow", "Action": "sns:Publish", "Resource": list(topic_arns)},
        {"Sid": "EncryptedTopics", "Effect": "Allow", "Action": ["kms:GenerateDataKey*", "kms:Decrypt"], "Resource": key_arn},
    ]}  # fmt: skip

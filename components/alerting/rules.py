"""Prometheus alerting and recording rules (pure): what the PrometheusRule objects hold.

SLO alerts follow the multi-window, multi-burn-rate method (Google SRE workbook, ch. 5):
with an error budget ``1 - objective``, page when the budget burns 14.4× too fast over 1 h
(confirmed over 5 m) or 6× over 6 h (30 m); open a ticket at 3× over 1 d (2 h) or 1× over
3 d (6 h). The same windows serve availability (5xx responses) and latency (responses slower
than the latency target, read from the histogram bucket at that bound).

Every alert carries ``severity`` (critical pages, warning opens a ticket), a summary, a
description and a runbook URL ``<runbookBaseUrl>/<alert>.md`` (docs/runbooks/ in this repository).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from components.config import AlertingConfig
from components.mirror.policies import NAMESPACE as MIRROR_NAMESPACE

REQUESTS = "inference_request_duration_seconds"
CLOUDWATCH_ORIGIN = "cloudwatch"  # `origin` label of alerts whose CloudWatch twin already notifies
ERRORS = 'status=~"5.."'
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (severity, [(long window, short window, burn rate)], for)
BURN = {
    "critical": ([("1h", "5m", 14.4), ("6h", "30m", 6.0)], "2m"),
    "warning": ([("1d", "2h", 3.0), ("3d", "6h", 1.0)], "15m"),
}


# Metrics the rules read from exporters other than the model servers, and who exports them
# (the servers' own metrics are checked against a live /metrics scrape in the tests).
EXPORTED_ELSEWHERE = {
    "node_cpu_seconds_total": "node-exporter", "node_memory_MemAvailable_bytes": "node-exporter",
    "node_memory_MemTotal_bytes": "node-exporter",
    "kube_pod_status_ready": "kube-state-metrics", "kube_pod_info": "kube-state-metrics",
    "kube_node_labels": "kube-state-metrics", "kube_node_status_condition": "kube-state-metrics",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "kube_job_status_failed": "kube-state-metrics", "kube_cronjob_status_last_successful_time": "kube-state-metrics",
    "DCGM_FI_DEV_FB_USED": "dcgm-exporter", "DCGM_FI_DEV_FB_FREE": "dcgm-exporter",
    "DCGM_FI_DEV_GPU_UTIL": "dcgm-exporter", "DCGM_FI_DEV_XID_ERRORS": "dcgm-exporter",
}  # fmt: skip
# Pod alerts carry the pod's node, so a node that is down inhibits them (alertmanager.py).
_ON_NODE = " * on (namespace, pod) group_left (node) kube_pod_info"
_PROMQL_WORDS = {"by", "without", "and", "or", "unless", "offset", "on", "ignoring", "group_left", "group_right", "bool"}


def referenced_metrics(expr: str) -> set[str]:
    """Metric names an expression reads (label matchers, strings, functions, durations and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\d+[smhdwy]+", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()[:1]
        if following != "(" and match.group() not in _PROMQL_WORDS:
            names.add(match.group())
    return names


@dataclass(frozen=True)
class Alert:
    name: str
    group: str
    expr: str
    duration: str  # the rule's `for`
    severity: str  # critical | warning
    summary: str
    description: str
    # The CloudWatch alarms (name suffixes) that already publish this signal to the alert topics
    # (components/alerting/cloudwatch_exporter.py): Alertmanager then sends it to webhooks only.
    twins: tuple[str, ...] = ()


def latency_bucket(seconds: float) -> str:
    """The histogram's ``le`` label for a latency bound (the server's buckets are fixed: metrics.py)."""
    return f"{seconds:g}"


def recording_rules(config: AlertingConfig) -> list[dict[str, Any]]:
    """Error and slow-request ratios over every burn-rate window, per namespace."""
    bound = latency_bucket(config.slo.latency_seconds)
    rules = []
    for window in WINDOWS:
        total = f"sum by (namespace) (rate({REQUESTS}_count[{window}]))"
        rules.append({"record": f"inference:request_errors:ratio_rate{window}",
                      "expr": f"sum by (namespace) (rate({REQUESTS}_count{{{ERRORS}}}[{window}])) / {total}"})  # fmt: skip
        rules.append({"record": f"inference:request_slow:ratio_rate{window}",
                      "expr": f"1 - sum by (namespace) (rate({REQUESTS}_bucket{{le=\"{bound}\"}}[{window}])) / {total}"})  # fmt: skip
    return rules


def _burn(kind: str, objective: float, severity: str) -> str:
    budget = round(1 - objective, 10)
    windows, _ = BURN[severity]
    return " or ".join(
        f"(inference:request_{kind}:ratio_rate{long} > ({rate:g} * {budget:g}) and "
        f"inference:request_{kind}:ratio_rate{short} > ({rate:g} * {budget:g}))"
        for long, short, rate in windows
    )


def alerts(config: AlertingConfig) -> list[Alert]:
    slo, limits = config.slo, config.thresholds
    found: list[Alert] = []
    for severity, speed in (("critical", "Fast"), ("warning", "Slow")):
        duration = BURN[severity][1]
        found.append(Alert(
            f"InferenceErrorBudget{speed}Burn", "inference-slo", _burn("errors", slo.availability, severity), duration,
            severity, "Inference is burning its error budget " + ("fast" if speed == "Fast" else "steadily"),
            f"5xx responses in {{{{ $labels.namespace }}}} exceed the {slo.availability:.3%} availability objective's budget "
            f"({'14.4x over 1h or 6x over 6h' if speed == 'Fast' else '3x over 1d or 1x over 3d'})."))  # fmt: skip
        found.append(Alert(
            f"InferenceLatencyBudget{speed}Burn", "inference-slo", _burn("slow", slo.latency_objective, severity), duration,
            severity, "Inference is burning its latency budget " + ("fast" if speed == "Fast" else "steadily"),
            f"More than {1 - slo.latency_objective:.1%} of requests in {{{{ $labels.namespace }}}} take longer than "
            f"{slo.latency_seconds:g} s, at the {'fast' if speed == 'Fast' else 'slow'} burn rates."))  # fmt: skip
    found += [
        Alert("InferenceLatencyP99High", "inference",
              f"histogram_quantile(0.99, sum by (namespace, le) (rate({REQUESTS}_bucket[5m]))) > {slo.latency_seconds:g}",
              "10m", "warning", "Inference P99 latency above target",
              f"P99 latency in {{{{ $labels.namespace }}}} is {{{{ $value | humanizeDuration }}}} (target {slo.latency_seconds:g} s)."),
        Alert("InferenceTimeToFirstTokenHigh", "inference",
              "histogram_quantile(0.95, sum by (namespace, le) (rate(inference_time_to_first_token_seconds_bucket[5m])))"
              f" > {limits.time_to_first_token_seconds:g}",
              "10m", "warning", "Time to first token is high",
              "P95 time to first token in {{ $labels.namespace }} is {{ $value | humanizeDuration }}."),
        Alert("InferenceQueueBacklog", "inference",
              f"max by (namespace, pod) (inference_queue_depth) > {limits.queue_depth}",
              "10m", "warning", "Requests are queueing on a model server",
              "{{ $labels.pod }} has {{ $value }} requests waiting for a batch."),
        Alert("InferenceShedding", "inference",
              'sum by (namespace) (rate(inference_rejected_requests_total{reason="queue_full"}[5m])) / '
              f"sum by (namespace) (rate({REQUESTS}_count[5m])) > {limits.shed_ratio:g}",
              "10m", "warning", "Model servers are refusing requests (429, queue full)",
              "{{ $value | humanizePercentage }} of requests in {{ $labels.namespace }} get 429: capacity is short."),
        Alert("InferenceRequestVolumeDrop", "inference",
              f"sum by (namespace) (increase({REQUESTS}_count[1h])) < {1 - limits.volume_drop_percent / 100:g} * "
              f"sum by (namespace) (increase({REQUESTS}_count[1h] offset 1d)) and "
              f"sum by (namespace) (increase({REQUESTS}_count[1h] offset 1d)) > {limits.volume_floor_per_hour}",
              "30m", "warning", "Request volume fell against the same hour yesterday",
              f"Requests to {{{{ $labels.namespace }}}} are down at least {limits.volume_drop_percent}% from the same time yesterday."),
        Alert("InferenceReadinessFlapping", "inference",
              '(changes(kube_pod_status_ready{condition="true", namespace="inference"}[30m]) > 4)' + _ON_NODE,
              "0m", "warning", "A model server keeps going in and out of readiness",
              "{{ $labels.pod }} changed readiness {{ $value }} times in 30 minutes."),
        Alert("PodRestartingOften", "kubernetes",
              f"(increase(kube_pod_container_status_restarts_total[30m]) > {limits.restarts_per_30m})" + _ON_NODE,
              "0m", "warning", "A container keeps restarting",
              "{{ $labels.namespace }}/{{ $labels.pod }} ({{ $labels.container }}) restarted {{ $value }} times in 30 minutes."),
        Alert("NodeCpuHigh", "nodes",
              f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[5m])) > {limits.node_cpu_percent / 100:g}',
              "5m", "warning", "Node CPU busy",
              f"{{{{ $labels.instance }}}} CPU has been above {limits.node_cpu_percent}% for 5 minutes."),
        Alert("NodeMemoryHigh", "nodes",
              f"1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes > {limits.node_memory_percent / 100:g}",
              "10m", "warning", "Node memory mostly in use",
              f"{{{{ $labels.instance }}}} uses more than {limits.node_memory_percent}% of its memory."),
        Alert("NodeMemoryLow", "nodes",
              f"node_memory_MemAvailable_bytes < {limits.node_free_memory_mb * 2**20}",
              "5m", "critical", "Node nearly out of memory",
              f"{{{{ $labels.instance }}}} has less than {limits.node_free_memory_mb} MB available: the OOM killer is next."),
        Alert("GpuMemoryHigh", "gpu",
              "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > "
              f"{limits.gpu_memory_percent / 100:g}",
              "15m", "warning", "GPU memory nearly full",
              "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} uses {{ $value | humanizePercentage }} of its memory."),
        Alert("GpuIdle", "gpu",
              f"avg_over_time(DCGM_FI_DEV_GPU_UTIL[1h]) < {limits.gpu_idle_percent}",
              "1h", "warning", "A GPU has been idle for two hours",
              "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} averaged {{ $value }}% utilisation: it is paid for, not used."),
        Alert("GpuXidError", "gpu",
              "DCGM_FI_DEV_XID_ERRORS > 0",
              "0m", "critical", "GPU reported an XID error",
              "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID {{ $value }}: drain the node if it repeats."),
        Alert("MirrorSyncFailing", "mirror",
              f'kube_job_status_failed{{namespace="{MIRROR_NAMESPACE}", job_name=~"mirror-sync-.*"}} > 0',
              "0m", "warning", "A model-mirror sync failed",
              "Job {{ $labels.job_name }} failed: the mirror may serve stale or missing revisions."),
        Alert("MirrorSyncStale", "mirror",
              f'time() - kube_cronjob_status_last_successful_time{{namespace="{MIRROR_NAMESPACE}", cronjob="mirror-sync"}}'
              f" > {limits.mirror_stale_hours * 3600}",
              "0m", "warning", "The model mirror has not synced successfully in over a day",
              f"No successful mirror sync for more than {limits.mirror_stale_hours} h."),
    ]  # fmt: skip
    return found


def rule_groups(config: AlertingConfig, extra: Sequence[Alert] = ()) -> list[dict[str, Any]]:
    """The ``spec.groups`` of the PrometheusRule: recording rules first, then one group per area.

    ``extra``: alerts of components with signals in CloudWatch (failover pair, VPN).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for alert in [*alerts(config), *extra]:
        origin = {"origin": CLOUDWATCH_ORIGIN} if alert.twins else {}
        groups.setdefault(alert.group, []).append({
            "alert": alert.name, "expr": alert.expr, "for": alert.duration,
            "labels": {"severity": alert.severity, **origin},
            "annotations": {"summary": alert.summary, "description": alert.description,
                            "runbook_url": f"{config.runbook_base_url.rstrip('/')}/{alert.name}.md"},
        })  # fmt: skip
    return [{"name": "inference-slo.rules", "rules": recording_rules(config)},
            *({"name": f"{name}.alerts", "rules": rules} for name, rules in groups.items())]

"""AWS-side signals in Prometheus: YACE (yet-another-cloudwatch-exporter) reads CloudWatch (pure).

The failover pair's agents and the VPN publish to CloudWatch, where their alarms page. The
exporter brings the same series into Prometheus, so the failover and VPN dashboards sit next
to the inference ones and Alertmanager can group and inhibit on them. Each component that
owns such signals declares them as :class:`ExportedSignals`: the exporter jobs, the alerts
over the exported series and a dashboard.

Those alerts carry ``origin: cloudwatch``: their CloudWatch twins already publish to the
alert topics, so Alertmanager sends them to webhooks only (alertmanager.py), never a second
page for the same event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from components.alerting.rules import Alert

CHART = "yet-another-cloudwatch-exporter"  # prometheus-community's chart
SERVICE_ACCOUNT = "cloudwatch-exporter"
SCRAPE_SECONDS = 60  # how often YACE reads CloudWatch (its -scraping-interval); 300 by default

Panel = tuple[str, str, str, str]  # (title, unit, expr, legend), as in dashboards.py


def _prom_string(text: str) -> str:
    """YACE's ``promutil.PromString``: ``_`` before an upper-case letter that follows a lower-case
    letter or digit, separators to ``_``, ``%`` to ``_percent``, all lower case."""
    out: list[str] = []
    previous = ""
    for char in text:
        if char in " ,\t/\\.-:=@<>()“":
            out.append("_")
        elif char == "%":
            out.append("_percent")
        else:
            if char.isupper() and (previous.islower() or previous.isdigit()):
                out.append("_")
            out.append(char.lower())
        previous = char
    return "".join(out)


def prometheus_name(namespace: str, metric: str, statistic: str) -> str:
    """The series name YACE exports (``promutil.BuildMetricName``): ``aws_<namespace>_<metric>_<stat>``.

    Parts of the namespace are trimmed off the front of the metric name, so ``Failover`` in
    ``Platform/Failover`` would export as ``aws_platform_failover__sum``: names come from here,
    never typed by hand.
    """
    namespace_part = _prom_string(namespace.lower()).removeprefix("_")
    metric_part = _prom_string(metric)
    for part in namespace_part.split("_"):
        metric_part = metric_part.removeprefix(part)
    metric_part = metric_part.removeprefix("_")
    prefix = "" if namespace_part.startswith("aws") else "aws_"
    return f"{prefix}{namespace_part}_{metric_part}_{_prom_string(statistic)}"


def dimension_label(dimension: str) -> str:
    """The label a CloudWatch dimension becomes (camel case kept; YACE's default)."""
    return f"dimension_{dimension}"


@dataclass(frozen=True)
class StaticJob:
    """One YACE static job: fixed dimensions of one namespace, each metric with one statistic."""

    name: str
    namespace: str
    dimensions: dict[str, Any]  # values may be Pulumi outputs until rendered
    metrics: tuple[tuple[str, str], ...]  # (CloudWatch metric, statistic)
    period: int = 60
    # Only the last two minutes: a series that stops reporting goes to 0 (nilToZero) quickly,
    # which the alerts read as "not master" / "down", like their CloudWatch twins' FILL(…, 0).
    length: int = 120

    def series(self) -> set[str]:
        return {prometheus_name(self.namespace, metric, stat) for metric, stat in self.metrics}

    def render(self, region: str, dimensions: dict[str, str]) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "regions": [region],
                "dimensions": [{"name": key, "value": value} for key, value in dimensions.items()],
                "metrics": [{"name": metric, "statistics": [stat], "period": self.period, "length": self.length,
                             "nilToZero": True} for metric, stat in self.metrics]}  # fmt: skip


@dataclass(frozen=True)
class ExportedSignals:
    """What one component puts into Prometheus through the exporter."""

    jobs: tuple[StaticJob, ...]
    alerts: tuple[Alert, ...]  # over the jobs' series only; each names its CloudWatch twins
    dashboard: tuple[str, str, tuple[Panel, ...]]  # (uid, title, panels)

    def series(self) -> set[str]:
        return set().union(*(job.series() for job in self.jobs))


def exporter_config(region: str, jobs: list[tuple[StaticJob, dict[str, str]]]) -> str:
    """YACE's config file: one static job per (job, resolved dimensions)."""
    return yaml.safe_dump({"apiVersion": "v1alpha1", "sts-region": region,
                           "static": [job.render(region, dims) for job, dims in jobs]}, sort_keys=False)  # fmt: skip


def reader_policy() -> str:
    """Read CloudWatch metrics (no resource-level permissions exist for these) and the account alias."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "ReadMetrics", "Effect": "Allow", "Resource": "*",
        "Action": ["cloudwatch:GetMetricData", "cloudwatch:GetMetricStatistics", "cloudwatch:ListMetrics",
                   "iam:ListAccountAliases"]}]})  # fmt: skip


def chart_values(config_text: Any, role_arn: Any, node_selector: dict[str, str]) -> dict[str, Any]:
    return {
        "config": config_text,
        "extraArgs": {"scraping-interval": SCRAPE_SECONDS},
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT, "annotations": {"eks.amazonaws.com/role-arn": role_arn}},
        "serviceMonitor": {"enabled": True, "interval": f"{SCRAPE_SECONDS}s"},
        "nodeSelector": dict(node_selector),
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "testConnection": False,
    }  # fmt: skip

"""No Prometheus rule may read a metric nothing exports: the servers' own, from a live scrape."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from components.alerting.dashboards import expressions as dashboard_expressions
from components.alerting.rules import EXPORTED_ELSEWHERE, referenced_metrics, rule_groups
from components.config import AlertingConfig

SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum")}  # fmt: skip


def test_every_metric_the_rules_read_is_exported(server):
    scraped = set()
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        scraped |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    groups = rule_groups(AlertingConfig())
    recorded = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
    read = set().union(*(referenced_metrics(rule["expr"]) for group in groups for rule in group["rules"]),
                       *(referenced_metrics(expr) for expr in dashboard_expressions()))  # fmt: skip
    inference = {name for name in read if name.startswith("inference_")}
    assert inference and inference <= scraped, f"not exported by the server: {sorted(inference - scraped)}"
    assert read - recorded - inference == set(EXPORTED_ELSEWHERE), "every other metric is listed with its exporter"
    assert {name for name in read if name.startswith("inference:")} <= recorded  # dashboards read defined records
    assert {name for name in read if name.startswith("inference:")} <= recorded  # alerts read only defined records


def test_the_metric_extraction_skips_labels_functions_and_keywords():
    expr = ('sum by (namespace) (rate(x_total{reason="a{b}"}[5m])) / sum without (pod) (y offset 1d) > on (ns) '
            "group_left z and histogram_quantile(0.9, w_bucket)")  # fmt: skip
    assert referenced_metrics(expr) == {"x_total", "y", "z", "w_bucket"}

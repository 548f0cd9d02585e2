"""Grafana dashboards: every query is valid PromQL (promtool) and the ConfigMaps reach the sidecar."""

from __future__ import annotations

import json
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from components.alerting import dashboards, monitoring
from components.alerting.rules import EXPORTED_ELSEWHERE, referenced_metrics
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS
from .signals import signal_dashboards

SIGNALS = signal_dashboards(load_stack_config("prod", ROOT))  # spot interruptions, failover, VPN


def _check(tmp_path, expressions: list[str]) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make` installs Debian's prometheus package as root")
    rules = [{"record": f"dashboard:query_{index}:check", "expr": expr} for index, expr in enumerate(expressions)]
    path = tmp_path / "dashboards.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)


def test_every_dashboard_query_is_valid_promql(tmp_path):
    assert len(SIGNALS) == 3  # spot interruptions, failover, VPN
    result = _check(tmp_path, dashboards.expressions(SIGNALS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(dashboards.expressions(SIGNALS))} rules found" in result.stdout


def test_a_typo_in_a_query_fails(tmp_path):
    assert _check(tmp_path, ["sum by (namespace (rate(inference_queue_depth[5m]))"]).returncode != 0


def test_dashboards_read_only_exported_or_recorded_metrics():
    read = set().union(*(referenced_metrics(expr) for expr in dashboards.expressions()))
    others = {name for name in read if not name.startswith(("inference_", "inference:"))}
    assert others <= set(EXPORTED_ELSEWHERE), sorted(others - set(EXPORTED_ELSEWHERE))
    # the servers' own names are checked against a live scrape in tests/inference/test_alert_metrics.py;
    # the failover and VPN dashboards' against their exporter jobs in test_cloudwatch_exporter.py


def test_the_config_maps_carry_the_sidecar_label_and_valid_json():
    maps = dashboards.config_maps("monitoring", monitoring.DASHBOARD_LABEL, SIGNALS)
    assert {m["metadata"]["name"] for m in maps} == {f"dashboard-{uid}" for uid, _, _ in dashboards.all_dashboards(SIGNALS)}
    for config_map in maps:
        kubernetes_validate.validate(config_map, "1.33.0", strict=True)
        assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}
        [(key, text)] = config_map["data"].items()
        board = json.loads(text)
        assert key == f"{board['uid']}.json" and board["panels"]
        assert all(p["targets"][0]["expr"] in dashboards.expressions(SIGNALS) for p in board["panels"])
    assert {"platform-inference", "platform-capacity", "platform-mirror"} == set(dashboards.DASHBOARDS)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_declares_the_dashboards_after_the_stack(plans, stack):
    plan, boards = plans[stack], signal_dashboards(load_stack_config(stack, ROOT))
    maps = {r.name: r for r in plan.of_type("kubernetes:core/v1:ConfigMap") if r.name.startswith("monitoring-dashboard-")}
    assert set(maps) == {f"monitoring-dashboard-{uid}" for uid, _, _ in dashboards.all_dashboards(boards)}
    [release] = [r for r in plan.resources if r.name == "monitoring-stack"]
    assert all(release.urn in m.depends_on for m in maps.values())
    allow = release.inputs["values"]["kube-state-metrics"]["metricLabelsAllowlist"]
    assert allow == ["nodes=[platform/gpu,capacity-type]"]  # the labels the capacity dashboard groups by

"""The Prometheus stack, DCGM exporter and the platform's rules in every stack's offline plan."""

from __future__ import annotations

import pytest

from components.alerting import monitoring, rules
from components.gpu import scheduling
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS
from .signals import signal_alerts


def _by_name(plan, prefix="monitoring-"):
    return {r.name: r for r in plan.resources if r.name.startswith(prefix) and r.custom}


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_loads_the_platform_rules(plans, stack):
    plan, config = plans[stack], load_stack_config(stack, ROOT)
    resources = _by_name(plan)
    stack_release, dcgm, rule = resources["monitoring-stack"], resources["monitoring-dcgm"], resources["monitoring-rules"]
    assert (stack_release.inputs["chart"], stack_release.inputs["version"]) == (
        "kube-prometheus-stack", config.alerting.prometheus.chart_version)
    assert stack_release.inputs["namespace"] == config.inference.prometheus_namespace
    selector = stack_release.inputs["values"]["prometheus"]["prometheusSpec"]["ruleSelector"]["matchLabels"]
    labels = rule.inputs["metadata"]["labels"]
    assert selector and all(labels.get(k) == v for k, v in selector.items()), "the rule must match the release's selector"
    assert rule.inputs["spec"]["groups"] == rules.rule_groups(config.alerting, signal_alerts(config))
    assert scheduling.gpu_toleration() in stack_release.inputs["values"]["prometheus-node-exporter"]["tolerations"]
    assert dcgm.inputs["values"]["nodeSelector"] == {scheduling.GPU_NODE_LABEL: "true"}
    assert dcgm.inputs["version"] == config.alerting.prometheus.dcgm_chart_version
    for dependent in (rule, dcgm):  # both need the chart's CRDs first
        assert stack_release.urn in dependent.depends_on


def test_every_annotation_names_its_runbook():
    config = load_stack_config("prod", ROOT)
    for group in rules.rule_groups(config.alerting, signal_alerts(config)):
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["annotations"]["runbook_url"].endswith(f"/{rule['alert']}.md")
                assert rule["labels"]["severity"] in ("critical", "warning")
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboards_label_is_the_grafana_sidecars():
    values = monitoring.stack_values(load_stack_config("dev", ROOT).alerting)
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"]) == monitoring.DASHBOARD_LABEL


@pytest.mark.parametrize("stack", STACKS)
def test_alertmanager_routes_to_the_alert_topics_through_its_own_role(plans, stack):
    plan = plans[stack]
    release = _by_name(plan)["monitoring-stack"]
    manager = release.inputs["values"]["alertmanager"]
    receivers = {r["name"]: r for r in manager["config"]["receivers"]}
    assert {"page", "ticket", "null"} <= set(receivers)
    topics = {r.name: r.urn for r in plan.of_type("aws:sns/topic:Topic") if r.name.startswith("alerting-")}
    assert set(topics) == {"alerting-page", "alerting-ticket"}
    assert set(topics.values()) <= set(release.dependencies["values"])  # the topic ARNs flow into the config
    [role] = [r for r in plan.of_type("aws:iam/role:Role") if r.name == "monitoring-alertmanager"]
    assert role.urn in release.dependencies["values"]  # the service account's IRSA annotation
    assert manager["serviceAccount"]["name"] == monitoring.ALERTMANAGER_SERVICE_ACCOUNT
    [policy] = [r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "monitoring-alertmanager"]
    assert set(topics.values()) <= set(policy.dependencies["policy"])


@pytest.mark.parametrize("stack", STACKS)
def test_the_model_servers_service_monitors_wait_for_the_chart(plans, stack):
    """Their CRD comes with kube-prometheus-stack: on a fresh cluster they must be created after it."""
    plan = plans[stack]
    [release] = [r for r in plan.resources if r.name == "monitoring-stack"]
    monitors = plan.of_type("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    eks = [m for m in monitors if m.name.startswith("serving-eks-")]
    assert eks and all(release.urn in m.depends_on for m in eks)

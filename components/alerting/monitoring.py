"""``platform:alerting:Monitoring`` — kube-prometheus-stack, DCGM exporter and the platform's rules on EKS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.alerting import rules
from components.config import AlertingConfig
from components.eks import SYSTEM_NODE_LABELS
from components.gpu.scheduling import GPU_NODE_LABEL, gpu_toleration

# Prometheus loads PrometheusRule objects with exactly these labels (its ruleSelector).
RULE_LABELS = {"platform.example.com/rules": "platform"}
DASHBOARD_LABEL = ("grafana_dashboard", "1")  # the Grafana sidecar's default
STACK_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
DCGM_REPOSITORY = "https://nvidia.github.io/dcgm-exporter/helm-charts"


def stack_values(config: AlertingConfig) -> dict[str, Any]:
    """kube-prometheus-stack values: select our rules and every ServiceMonitor, run on system nodes."""
    return {
        "prometheus": {"prometheusSpec": {
            "retention": config.prometheus.retention,
            "ruleSelector": {"matchLabels": dict(RULE_LABELS)},
            "ruleNamespaceSelector": {},
            # The inference servers' ServiceMonitors carry no release label: select them all.
            "serviceMonitorSelectorNilUsesHelmValues": False,
            "podMonitorSelectorNilUsesHelmValues": False,
            "nodeSelector": dict(SYSTEM_NODE_LABELS),
        }},
        "alertmanager": {"alertmanagerSpec": {"nodeSelector": dict(SYSTEM_NODE_LABELS)}},
        "grafana": {"nodeSelector": dict(SYSTEM_NODE_LABELS), "sidecar": {"dashboards": {
            "enabled": True, "label": DASHBOARD_LABEL[0], "labelValue": DASHBOARD_LABEL[1], "searchNamespace": "ALL"}}},
        # Node metrics from every node, GPU nodes included.
        "prometheus-node-exporter": {"tolerations": [gpu_toleration()]},
        "kube-state-metrics": {"nodeSelector": dict(SYSTEM_NODE_LABELS)},
    }  # fmt: skip


def dcgm_values() -> dict[str, Any]:
    """NVIDIA's DCGM exporter on GPU nodes only, scraped through its ServiceMonitor."""
    return {
        "nodeSelector": {GPU_NODE_LABEL: "true"},
        "tolerations": [gpu_toleration()],
        "serviceMonitor": {"enabled": True, "interval": "15s"},
    }


def prometheus_rule(config: AlertingConfig, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "platform", "namespace": namespace, "labels": dict(RULE_LABELS)},
            "spec": {"groups": rules.rule_groups(config)}}  # fmt: skip


@dataclass(frozen=True)
class MonitoringArgs:
    config: AlertingConfig
    namespace: str  # where Prometheus runs (the inference NetworkPolicy admits scrapes from it)
    k8s_provider: k8s.Provider


class Monitoring(pulumi.ComponentResource):
    """The Prometheus stack and the platform's alerting rules on EKS (Kubernetes resources only).

    Outputs: ``rule_names`` (the alerts declared).
    """

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        config = args.config
        manifest = prometheus_rule(config, args.namespace)  # built (and validated) before anything is declared
        super().__init__("platform:alerting:Monitoring", name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        stack = k8s.helm.v3.Release(
            f"{name}-stack", name=config.prometheus.release, chart="kube-prometheus-stack",
            version=config.prometheus.chart_version, repository_opts={"repo": STACK_REPOSITORY},
            namespace=args.namespace, create_namespace=True, values=stack_values(config), opts=k8s_opts,
        )  # fmt: skip
        k8s.helm.v3.Release(
            f"{name}-dcgm", name="dcgm-exporter", chart="dcgm-exporter", version=config.prometheus.dcgm_chart_version,
            repository_opts={"repo": DCGM_REPOSITORY}, namespace=args.namespace, values=dcgm_values(),
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[stack])),  # ServiceMonitor CRD
        )  # fmt: skip
        k8s.apiextensions.CustomResource(
            f"{name}-rules", api_version=manifest["apiVersion"], kind=manifest["kind"], metadata=manifest["metadata"],
            spec=manifest["spec"], opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[stack])),
        )  # fmt: skip
        self.rule_names = [alert.name for alert in rules.alerts(config)]
        self.register_outputs({"rule_names": self.rule_names})

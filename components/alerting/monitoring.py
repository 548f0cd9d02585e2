"""``platform:alerting:Monitoring`` — kube-prometheus-stack, DCGM exporter and the platform's rules on EKS."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import kubernetes
from components.alerting import alertmanager, cloudwatch_exporter, dashboards, rules
from components.alerting.cloudwatch_exporter import ExportedSignals, StaticJob
from components.base import PlatformComponent
from components.config import AlertingConfig
from components.eks import SYSTEM_NODE_LABELS
from components.eks.policies import irsa_trust_policy
from components.tagging import TagContext
from components.gpu.scheduling import GPU_NODE_LABEL, gpu_toleration

# Prometheus loads PrometheusRule objects with exactly these labels (its ruleSelector).
RULE_LABELS = {"platform.example.com/rules": "platform"}
DASHBOARD_LABEL = ("grafana_dashboard", "1")  # the Grafana sidecar's default
STACK_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
DCGM_REPOSITORY = "https://nvidia.github.io/dcgm-exporter/helm-charts"
ALERTMANAGER_SERVICE_ACCOUNT = "alertmanager"


def stack_values(config: AlertingConfig, alertmanager_config: Any = None, alertmanager_role_arn: Any = None) -> dict[str, Any]:
    """kube-prometheus-stack values: select our rules and every ServiceMonitor, run on system nodes;
    Alertmanager with our routing, publishing to SNS through its IRSA role."""
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
        "alertmanager": {
            "alertmanagerSpec": {"nodeSelector": dict(SYSTEM_NODE_LABELS)},
            "config": alertmanager_config,
            "serviceAccount": {"create": True, "name": ALERTMANAGER_SERVICE_ACCOUNT,
                               "annotations": {"eks.amazonaws.com/role-arn": alertmanager_role_arn}},
        },
        "grafana": {"nodeSelector": dict(SYSTEM_NODE_LABELS), "sidecar": {"dashboards": {
            "enabled": True, "label": DASHBOARD_LABEL[0], "labelValue": DASHBOARD_LABEL[1], "searchNamespace": "ALL"}}},
        # Node metrics from every node, GPU nodes included.
        "prometheus-node-exporter": {"tolerations": [gpu_toleration()]},
        # Node labels the capacity dashboard groups by (kube_node_labels exports only allowlisted ones).
        "kube-state-metrics": {"nodeSelector": dict(SYSTEM_NODE_LABELS),
                               "metricLabelsAllowlist": [f"nodes=[{','.join(dashboards.NODE_LABELS)}]"]},
    }  # fmt: skip


def dcgm_values() -> dict[str, Any]:
    """NVIDIA's DCGM exporter on GPU nodes only, scraped through its ServiceMonitor."""
    return {
        "nodeSelector": {GPU_NODE_LABEL: "true"},
        "tolerations": [gpu_toleration()],
        "serviceMonitor": {"enabled": True, "interval": "15s"},
    }


def prometheus_rule(config: AlertingConfig, namespace: str, signals: Sequence[ExportedSignals] = ()) -> dict[str, Any]:
    extra = [alert for signal in signals for alert in signal.alerts]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "platform", "namespace": namespace, "labels": dict(RULE_LABELS)},
            "spec": {"groups": rules.rule_groups(config, extra)}}  # fmt: skip


def _exporter_config(region: str, jobs: list[StaticJob]) -> pulumi.Output[str]:
    """YACE's config once every job's dimensions (VPN id, tunnel addresses: outputs) are known."""

    def render(values: list[str]) -> str:
        resolved = iter(values)
        return cloudwatch_exporter.exporter_config(region, [(job, {key: next(resolved) for key in job.dimensions})
                                                            for job in jobs])  # fmt: skip

    return pulumi.Output.all(*(value for job in jobs for value in job.dimensions.values())).apply(render)


@dataclass(frozen=True)
class MonitoringArgs:
    config: AlertingConfig
    namespace: str  # where Prometheus runs (the inference NetworkPolicy admits scrapes from it)
    region: str
    k8s_provider: k8s.Provider
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]
    topic_arns: dict[str, pulumi.Input[str]]  # severity -> SNS topic (components/alerting AlertTopic)
    topic_key_arn: pulumi.Input[str]
    # Components' signals in CloudWatch (failover pair, VPN): exporter jobs, alerts, dashboards.
    signals: Sequence[ExportedSignals] = ()


class Monitoring(PlatformComponent):
    """``platform:alerting:Monitoring`` — the Prometheus stack, Alertmanager routing to the alert
    topics and the platform's alerting rules on EKS; with ``signals``, the CloudWatch exporter
    (YACE, its own IRSA role) and those components' alerts and dashboards.

    Outputs: ``rule_names`` (the alerts declared).
    """

    def __init__(self, name: str, args: MonitoringArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        config = args.config
        manifest = prometheus_rule(config, args.namespace, args.signals)  # built (and validated) before anything is declared
        super().__init__("platform:alerting:Monitoring", name, "monitoring", tags, provider, opts)
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer).apply(
            lambda v: irsa_trust_policy(v[0], v[1], args.namespace, ALERTMANAGER_SERVICE_ACCOUNT))
        role = aws.iam.Role(self.child_name("alertmanager"), description="Alertmanager publishes alerts to SNS",
                            assume_role_policy=trust, tags=self.tags("alertmanager"), opts=self.child_opts())  # fmt: skip
        aws.iam.RolePolicy(
            self.child_name("alertmanager"), role=role.id,
            policy=pulumi.Output.all(args.topic_key_arn, *args.topic_arns.values()).apply(
                lambda v: json.dumps(alertmanager.publisher_policy(v[1:], v[0]))),
            opts=self.child_opts())  # fmt: skip
        routing = alertmanager.config(config, args.topic_arns, args.region)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        stack = k8s.helm.v3.Release(
            self.child_name("stack"), name=config.prometheus.release, chart="kube-prometheus-stack",
            version=config.prometheus.chart_version, repository_opts={"repo": STACK_REPOSITORY},
            namespace=args.namespace, create_namespace=True, values=stack_values(config, routing, role.arn), opts=k8s_opts,
        )  # fmt: skip
        after_stack = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[stack]))  # its CRDs
        k8s.helm.v3.Release(
            self.child_name("dcgm"), name="dcgm-exporter", chart="dcgm-exporter", version=config.prometheus.dcgm_chart_version,
            repository_opts={"repo": DCGM_REPOSITORY}, namespace=args.namespace, values=dcgm_values(), opts=after_stack,
        )  # fmt: skip
        kubernetes.declare(self.child_name("rules"), manifest, after_stack)
        boards = [signal.dashboard for signal in args.signals]
        for board in dashboards.config_maps(args.namespace, DASHBOARD_LABEL, boards):
            kubernetes.declare(self.child_name(board["metadata"]["name"]), board, after_stack)
        if args.signals:
            self._cloudwatch_exporter(args, [job for signal in args.signals for job in signal.jobs], after_stack)
        self.stack_release = stack
        self.rule_names = [rule["alert"] for group in manifest["spec"]["groups"] for rule in group["rules"] if "alert" in rule]
        self.register_outputs({"rule_names": self.rule_names})

    def _cloudwatch_exporter(self, args: MonitoringArgs, jobs: list[StaticJob], opts: pulumi.ResourceOptions) -> None:
        """YACE reading the components' CloudWatch series, with a role that may only read metrics."""
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer).apply(
            lambda v: irsa_trust_policy(v[0], v[1], args.namespace, cloudwatch_exporter.SERVICE_ACCOUNT))
        role = aws.iam.Role(self.child_name("cloudwatch-exporter"), description="YACE reads CloudWatch metrics",
                            assume_role_policy=trust, tags=self.tags("cloudwatch-exporter"), opts=self.child_opts())  # fmt: skip
        aws.iam.RolePolicy(self.child_name("cloudwatch-exporter"), role=role.id, policy=cloudwatch_exporter.reader_policy(),
                           opts=self.child_opts())  # fmt: skip
        values = cloudwatch_exporter.chart_values(_exporter_config(args.region, jobs), role.arn, SYSTEM_NODE_LABELS)
        k8s.helm.v3.Release(
            self.child_name("cloudwatch-exporter"), name="cloudwatch-exporter", chart=cloudwatch_exporter.CHART,
            version=args.config.prometheus.cloudwatch_exporter_chart_version, repository_opts={"repo": STACK_REPOSITORY},
            namespace=args.namespace, values=values, opts=opts,  # after the stack: its ServiceMonitor CRD
        )  # fmt: skip

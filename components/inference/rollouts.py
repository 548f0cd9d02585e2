"""Canary releases with Argo Rollouts (pure): the analysis queries, the AnalysisTemplate, the
canary strategy, and the Deployment-to-Rollout conversion.

Why Argo Rollouts and not Flagger: the platform's two entries are the AWS Load Balancer
Controller's ALB (EKS) and ingress-nginx (private cloud). Argo Rollouts splits traffic on
both (``trafficRouting.alb``, ``trafficRouting.nginx``); Flagger has no ALB provider. A
deployment no entry serves is split by replica count, behind its one Service.

The analysis reads the SLIs the alerts read (:mod:`components.alerting.rules`): the 5xx share
and the latency histogram of ``inference_request_duration_seconds``, and kube-state-metrics'
readiness, restricted to the canary's pods by the ``rollouts-pod-template-hash`` label
Argo Rollouts puts on them (the ServiceMonitor copies it onto every series).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.alerting.rules import ERRORS, REQUESTS
from components.config import CanaryAnalysisConfig, CanaryConfig

CANARY_HASH_ARG = "canary-hash"
HASH_LABEL = "rollouts-pod-template-hash"  # set by Argo Rollouts on each ReplicaSet's pods
HASH_SERIES_LABEL = "rollouts_pod_template_hash"  # the same, as Prometheus names it (podTargetLabels)
PROMETHEUS_ADDRESS_ARG = "prometheus-address"


@dataclass(frozen=True)
class AnalysisMetric:
    name: str
    query: str
    threshold: float
    failing_above: bool  # True: a value above the threshold fails; False: below fails

    @property
    def success_condition(self) -> str:
        # NaN (no requests yet) is neither success nor failure: the measurement is inconclusive.
        return f"result[0] <= {self.threshold:g}" if self.failing_above else f"result[0] >= {self.threshold:g}"

    @property
    def failure_condition(self) -> str:
        return f"result[0] > {self.threshold:g}" if self.failing_above else f"result[0] < {self.threshold:g}"


def analysis_metrics(deployment: str, namespace: str, analysis: CanaryAnalysisConfig,
                     canary_hash: str = "{{args.canary-hash}}") -> list[AnalysisMetric]:  # fmt: skip
    """The three measurements of one deployment's canary (``canary_hash``: Argo's argument, or a
    literal hash in the tests)."""
    window = f"{2 * analysis.interval_seconds}s"
    canary = f'namespace="{namespace}", {HASH_SERIES_LABEL}="{canary_hash}"'
    pods = f'namespace="{namespace}", pod=~"{deployment}-{canary_hash}-.*"'
    requests = f"sum(rate({REQUESTS}_count{{{canary}}}[{window}]))"
    return [
        AnalysisMetric("error-ratio", f"sum(rate({REQUESTS}_count{{{canary}, {ERRORS}}}[{window}])) / {requests}",
                       analysis.max_error_ratio, failing_above=True),
        AnalysisMetric("p99-latency",
                       f"histogram_quantile(0.99, sum by (le) (rate({REQUESTS}_bucket{{{canary}}}[{window}])))",
                       analysis.max_p99_latency_seconds, failing_above=True),
        AnalysisMetric("ready-ratio",
                       f'sum(kube_pod_status_ready{{{pods}, condition="true"}}) / count(kube_pod_status_ready{{{pods}, condition="true"}})',
                       analysis.min_ready_ratio, failing_above=False),
    ]  # fmt: skip


def template_name(deployment: str) -> str:
    return f"{deployment}-canary"


def analysis_template(deployment: str, namespace: str, analysis: CanaryAnalysisConfig, prometheus_address: str,
                      labels: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """The deployment's AnalysisTemplate: each metric measured every interval; more than
    ``failureLimit`` failures abort the rollout, which scales the canary away."""
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": template_name(deployment), "namespace": namespace, "labels": labels},
        "spec": {
            "args": [{"name": CANARY_HASH_ARG}],
            "metrics": [{
                "name": metric.name, "interval": f"{analysis.interval_seconds}s",
                "failureLimit": analysis.failure_limit,
                # Three inconclusive (no traffic) measurements in a row pause the rollout for a person.
                "inconclusiveLimit": 3,
                "successCondition": metric.success_condition, "failureCondition": metric.failure_condition,
                "provider": {"prometheus": {"address": prometheus_address, "query": metric.query}},
            } for metric in analysis_metrics(deployment, namespace, analysis)],
        },
    }  # fmt: skip


def canary_steps(canary: CanaryConfig) -> list[dict[str, Any]]:
    """``strategy.canary.steps``: each weight, then its pause (none after the last)."""
    steps: list[dict[str, Any]] = []
    for index, step in enumerate(canary.steps):
        steps.append({"setWeight": step.weight})
        if index < len(canary.steps) - 1:
            steps.append({"pause": {"duration": f"{step.pause_seconds}s"}} if step.pause_seconds is not None else {"pause": {}})
    return steps


def canary_strategy(deployment: str, canary: CanaryConfig, *, stable_service: str, canary_service: str,
                    traffic_routing: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """``spec.strategy.canary``: the steps, the background analysis from the first step on, and
    the traffic split (an entry's, or none: replica counts behind the stable Service)."""
    strategy: dict[str, Any] = {
        "steps": canary_steps(canary),
        "analysis": {"templates": [{"templateName": template_name(deployment)}], "startingStep": 1,
                     "args": [{"name": CANARY_HASH_ARG, "valueFrom": {"podTemplateHashValue": "Latest"}}]},
        "abortScaleDownDelaySeconds": 30,  # an aborted canary's pods leave once traffic has left them
    }  # fmt: skip
    if traffic_routing is not None:
        strategy |= {"stableService": stable_service, "canaryService": canary_service, "trafficRouting": traffic_routing}
    return strategy


def alb_routing(ingress: str, root_service: str, port: int) -> dict[str, Any]:
    return {"alb": {"ingress": ingress, "rootService": root_service, "servicePort": port}}


def nginx_routing(ingress: str) -> dict[str, Any]:
    return {"nginx": {"stableIngress": ingress}}


def rollout_from_deployment(deployment_manifest: dict[str, Any], strategy: dict[str, Any]) -> dict[str, Any]:
    """The same pods as an Argo Rollout: replicas, selector and template unchanged; the
    Deployment's rolling-update strategy replaced by the canary."""
    spec = {key: value for key, value in deployment_manifest["spec"].items() if key not in ("strategy", "progressDeadlineSeconds")}
    return {**deployment_manifest, "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "spec": {**spec, "strategy": {"canary": strategy}}}  # fmt: skip

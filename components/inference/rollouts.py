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
from components.config import CanaryAnalysisConfig, CanaryConfig, InferenceConfig, ModelDeploymentConfig
from components.inference.manifests import (ROLLOUT_HASH_LABEL, ROLLOUTS_API, SERVICE_PORT, STARTUP_BUDGET_SECONDS,
                                           traffic_service)

CANARY_HASH_ARG = "canary-hash"
HASH_SERIES_LABEL = ROLLOUT_HASH_LABEL.replace("-", "_")  # as Prometheus names the copied pod label
ARGO_CHARTS = "https://argoproj.github.io/argo-helm"
ALB_BACKEND_PORT = "use-annotation"  # the ALB controller reads the split from Argo's action annotation
# A canary pod may take the startup probe's whole budget (download, verify, load): only past it,
# plus scheduling, is the rollout stuck. Argo's default (600 s) would call a model load a failure.
PROGRESS_DEADLINE_SECONDS = STARTUP_BUDGET_SECONDS + 300
STEP_START_SECONDS = 1200  # what a deploy job allows each step for its new pods to start


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
        "apiVersion": ROLLOUTS_API, "kind": "AnalysisTemplate",
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


def canary_strategy(deployment: str, canary: CanaryConfig, traffic_routing: dict[str, Any] | None) -> dict[str, Any]:
    """``spec.strategy.canary``: the steps, the background analysis from the first step on, and
    the traffic split (an entry's, between the stable and canary Services; or none: replica
    counts behind the deployment's Service)."""
    strategy: dict[str, Any] = {
        "steps": canary_steps(canary),
        "analysis": {"templates": [{"templateName": template_name(deployment)}], "startingStep": 1,
                     "args": [{"name": CANARY_HASH_ARG, "valueFrom": {"podTemplateHashValue": "Latest"}}]},
        "abortScaleDownDelaySeconds": 30,  # an aborted canary's pods leave once traffic has left them
    }  # fmt: skip
    if traffic_routing is not None:
        strategy |= {"stableService": traffic_service(deployment, "stable"), "canaryService": traffic_service(deployment, "canary"),
                     "trafficRouting": traffic_routing}
    return strategy


def rollout_from_deployment(deployment_manifest: dict[str, Any], strategy: dict[str, Any]) -> dict[str, Any]:
    """The same pods as an Argo Rollout: replicas, selector and template unchanged; the
    Deployment's rolling-update strategy replaced by the canary. A canary whose pods don't
    become ready within :data:`PROGRESS_DEADLINE_SECONDS` is aborted (rolled back)."""
    spec = {key: value for key, value in deployment_manifest["spec"].items() if key not in ("strategy", "progressDeadlineSeconds")}
    return {**deployment_manifest, "apiVersion": ROLLOUTS_API, "kind": "Rollout",
            "spec": {**spec, "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS, "progressDeadlineAbort": True,
                     "strategy": {"canary": strategy}}}  # fmt: skip


def prometheus_url(config: InferenceConfig, target: str) -> str:
    """Where a target's canaries are analysed: on EKS the platform's Prometheus (the operator's
    ``prometheus-operated`` Service), on the private cloud the configured one."""
    if target == "eks":
        return f"http://prometheus-operated.{config.prometheus_namespace}.svc:9090"
    url = config.rollouts.private_cloud_prometheus_url
    assert url is not None  # the config model requires it with a canary there
    return url


def traffic_routing(deployment: ModelDeploymentConfig) -> dict[str, Any] | None:
    """The entry's split for an exposed deployment (ALB on EKS, NGINX on the private cloud);
    None: replica counts behind the deployment's Service."""
    if not deployment.expose:
        return None
    if deployment.target == "eks":
        return {"alb": {"ingress": deployment.name, "rootService": deployment.name, "servicePort": SERVICE_PORT}}
    return {"nginx": {"stableIngress": deployment.name}}


def ingress_backend(deployment: ModelDeploymentConfig) -> dict[str, Any]:
    """What an exposed deployment's Ingress sends to: its Service, or, with a canary, what
    Argo Rollouts steers (the ALB's action annotation on the root Service; NGINX's stable
    Service, beside the canary Ingress Argo adds)."""
    if deployment.canary is None:
        return {"service": {"name": deployment.name, "port": {"number": SERVICE_PORT}}}
    if deployment.target == "eks":
        return {"service": {"name": deployment.name, "port": {"name": ALB_BACKEND_PORT}}}
    return {"service": {"name": traffic_service(deployment.name, "stable"), "port": {"number": SERVICE_PORT}}}


def controller_values(node_selector: dict[str, str] | None) -> dict[str, Any]:
    """argo-rollouts chart values: its CRDs, two controller replicas (leader election), no dashboard."""
    controller: dict[str, Any] = {
        "replicas": 2,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "metrics": {"enabled": True},
    }
    if node_selector:
        controller["nodeSelector"] = dict(node_selector)
    return {"installCRDs": True, "keepCRDs": True, "controller": controller, "dashboard": {"enabled": False}}


def timeout_seconds(canary: CanaryConfig, per_step_seconds: int = STEP_START_SECONDS, manual_gate_seconds: int = 3600) -> int:
    """How long a deploy job waits for a canary: every timed pause, a GPU pod's start per step,
    and an hour for each step that waits on a person's promote."""
    pauses = [step.pause_seconds for step in canary.steps[:-1]]
    return sum(p for p in pauses if p is not None) + per_step_seconds * len(canary.steps) + manual_gate_seconds * pauses.count(None)

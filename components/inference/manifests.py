"""Kubernetes objects of a model deployment, as plain manifests (pure functions).

The component hands these dicts to pulumi-kubernetes unchanged, and the tests validate
the very same dicts against the Kubernetes OpenAPI schema, so what is checked is what is
applied. Values only known at deploy time (the image digest, an IRSA role ARN) are passed
in by the caller and placed as given.
"""

from __future__ import annotations

import json

from dataclasses import dataclass, field
from typing import Any, Literal

from components.config import InferenceConfig, ModelDeploymentConfig
from components.gpu import scheduling

SERVER_PORT = 8000
SERVICE_ACCOUNT = "inference-server"
AUTH_SECRET = "inference-auth"
RUN_AS = 10001  # the image's non-root user (inference_image/Dockerfile)
MODEL_CACHE_PATH = "/models"
PRE_STOP_SECONDS = 5  # endpoints controllers and proxies stop routing here before SIGTERM
KILL_MARGIN_SECONDS = 10  # SIGKILL only this long after the server's own drain deadline
STARTUP_PERIOD_SECONDS = 10
STARTUP_BUDGET_SECONDS = 1800  # download through the mirror, verify, load and warm up
# Paths the server serves (inference_server.api); a test checks them against its routes.
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"
QUEUE_DEPTH_METRIC = "inference_queue_depth"


@dataclass(frozen=True)
class TargetCluster:
    """What differs between the clusters a model can run on."""

    name: Literal["eks", "privateCloud"]
    kubernetes_version: str
    has_gpu_scheduling_contract: bool  # EKS: the GPU pools' labels and taint (components/gpu)
    gpu_node_selector: dict[str, str] = field(default_factory=dict)  # elsewhere: plain node labels
    egress_cidrs: tuple[str, ...] = ()
    image_pull_secret: str | None = None
    client_cidrs: tuple[str, ...] = ()  # networks that call the servers directly (the private cloud, over the VPN)
    load_balancer_cidrs: tuple[str, ...] = ()  # where the ALB's nodes sit (EKS, IP targets): exposed deployments only


def labels(deployment: str, version: str) -> dict[str, str]:
    return {**selector(deployment), "app.kubernetes.io/version": version,
            "app.kubernetes.io/part-of": "gpu-inference-platform", "app.kubernetes.io/managed-by": "pulumi"}  # fmt: skip


def selector(deployment: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "inference-server", "app.kubernetes.io/instance": deployment}


def _object(api_version: str, kind: str, name: str, namespace: str | None, object_labels: dict[str, str],
            **rest: Any) -> dict[str, Any]:  # fmt: skip
    metadata: dict[str, Any] = {"name": name, "labels": object_labels}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **rest}


# --------------------------------------------------------------------------- shared per namespace


def namespace(config: InferenceConfig) -> dict[str, Any]:
    # Pod Security Admission: the servers meet "restricted", so the namespace enforces it.
    ns_labels = {"app.kubernetes.io/part-of": "gpu-inference-platform",
                 "pod-security.kubernetes.io/enforce": "restricted",
                 "pod-security.kubernetes.io/audit": "restricted"}  # fmt: skip
    return _object("v1", "Namespace", config.namespace, None, ns_labels)


def service_account(config: InferenceConfig, role_arn: Any | None) -> dict[str, Any]:
    account = _object("v1", "ServiceAccount", SERVICE_ACCOUNT, config.namespace,
                      {"app.kubernetes.io/name": "inference-server"}, automountServiceAccountToken=False)  # fmt: skip
    if role_arn is not None:  # IRSA: read access to the mirror bucket
        account["metadata"]["annotations"] = {"eks.amazonaws.com/role-arn": role_arn}
    return account


def auth_secret(config: InferenceConfig, key_material: Any) -> dict[str, Any]:
    return _object("v1", "Secret", AUTH_SECRET, config.namespace, {"app.kubernetes.io/name": "inference-server"},
                   type="Opaque", stringData={"jwt-key": key_material})  # fmt: skip


def default_deny(config: InferenceConfig) -> dict[str, Any]:
    return _object("networking.k8s.io/v1", "NetworkPolicy", "default-deny", config.namespace,
                   {"app.kubernetes.io/part-of": "gpu-inference-platform"},
                   spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})  # fmt: skip


# --------------------------------------------------------------------------- per model deployment


MIRROR_KEY_CONFIG_MAP = "mirror-signing-key"  # the mirror's public key: servers verify its manifest signatures
MIRROR_KEY_PATH = "/var/run/mirror-signing"


def signs(deployment: ModelDeploymentConfig, mirror_key: bool) -> bool:
    """Whether this deployment's download is trusted only through the mirror's signature."""
    return mirror_key and deployment.model_id is not None


def mirror_key_config_map(config: InferenceConfig, public_key_pem: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": MIRROR_KEY_CONFIG_MAP, "namespace": config.namespace,
                         "labels": {"app.kubernetes.io/part-of": "gpu-inference-platform"}},
            "data": {"key.pem": public_key_pem}}  # fmt: skip


def server_environment(deployment: ModelDeploymentConfig, config: InferenceConfig, mirror_key: bool = False) -> dict[str, str]:
    """inference-server's options by their environment variables (its cli.py).

    They are the container's own ``env``, in the pod template: a new model revision or setting
    is a new template, so it rolls out (or canaries), and each ReplicaSet keeps the settings it
    started with. (A shared ConfigMap changed under running pods without rolling them.)"""
    server = deployment.server
    env = {
        "HOST": "0.0.0.0",  # noqa: S104 - inside the pod; the NetworkPolicy decides who reaches it
        "PORT": str(SERVER_PORT),
        "DEVICE": "cuda" if deployment.variant == "cuda" else "cpu",
        "MAX_BATCH_SIZE": str(server.max_batch_size),
        "MAX_WAIT_MS": str(server.max_wait_ms),
        "MAX_QUEUE": str(server.max_queue),
        "MAX_INPUT_TOKENS": str(server.max_input_tokens),
        "MAX_NEW_TOKENS": str(server.max_new_tokens),
        "REQUEST_TIMEOUT_S": str(server.request_timeout_seconds),
        "GRACE_PERIOD_S": str(server.grace_period_seconds),
        "MAX_BODY_BYTES": str(server.max_body_bytes),
        "QUANTIZE_INT8": "true" if server.quantize_int8 else "false",
        "MODEL_CACHE_DIR": MODEL_CACHE_PATH,
        "LOG_LEVEL": "info",
    }
    if deployment.demo:
        env["DEMO"] = "true"
    else:
        assert deployment.model_id and deployment.revision and config.hf_endpoint  # checked by the config model
        env |= {"MODEL_ID": deployment.model_id, "MODEL_REVISION": deployment.revision,
                "HF_ENDPOINT": config.hf_endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
        if signs(deployment, mirror_key):
            env["MIRROR_PUBLIC_KEY_FILE"] = f"{MIRROR_KEY_PATH}/key.pem"
    if config.auth is not None:
        env |= {"JWT_ALGORITHM": config.auth.algorithm, "JWT_AUDIENCE": config.auth.audience,
                "JWT_ISSUER": config.auth.issuer, "JWT_KEY_FILE": "/var/run/secrets/inference-auth/jwt-key"}  # fmt: skip
        quotas = config.tenant_limits  # enforced by the server, so they hold behind any ingress
        env |= {"TENANT_CLAIM": quotas.claim, "TENANT_REQUESTS_PER_MINUTE": str(quotas.requests_per_minute),
                "TENANT_BURST": str(quotas.burst),
                "TENANT_OVERRIDES": json.dumps({tenant: {"requestsPerMinute": limit.requests_per_minute,
                                                         "burst": limit.burst}
                                                for tenant, limit in sorted(quotas.overrides.items())})}  # fmt: skip
    return env


def termination_grace_seconds(deployment: ModelDeploymentConfig) -> int:
    """preStop pause + the server's own drain deadline + a margin before SIGKILL."""
    return PRE_STOP_SECONDS + deployment.server.grace_period_seconds + KILL_MARGIN_SECONDS


def _scheduling(deployment: ModelDeploymentConfig, target: TargetCluster) -> dict[str, Any]:
    if deployment.variant != "cuda":
        return {}
    if target.has_gpu_scheduling_contract:
        return scheduling.serving_pod_scheduling()
    return {"nodeSelector": dict(target.gpu_node_selector), "tolerations": [scheduling.gpu_toleration()]}


IMAGE_TAG_ANNOTATION = "platform.gpu-inference/image-tag"


def deployment_manifest(deployment: ModelDeploymentConfig, config: InferenceConfig, target: TargetCluster,
                        image: Any, version: str, mirror_key: bool = False, image_tag: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The Deployment: ``image`` must be ``<repository>@sha256:<digest>`` (see image.pinned_ref).

    ``image_tag`` (``<version>-<source id>``) annotates the pod template: the digest is only
    known once built, the tag already in the plan, so an offline diff sees a new build too."""
    resources: dict[str, dict[str, Any]] = {
        "requests": {"cpu": deployment.resources.cpu, "memory": deployment.resources.memory},
        "limits": {"cpu": deployment.resources.cpu, "memory": deployment.resources.memory},
    }
    if deployment.gpus:
        resources["requests"][scheduling.GPU_RESOURCE] = str(deployment.gpus)
        resources["limits"][scheduling.GPU_RESOURCE] = str(deployment.gpus)
    probe = {"httpGet": {"path": READINESS_PATH, "port": "http"}, "timeoutSeconds": 2}
    container = {
        "name": "server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": [{"name": name, "value": value}
                for name, value in sorted(server_environment(deployment, config, mirror_key).items())],
        "resources": resources,
        "startupProbe": {**probe, "periodSeconds": STARTUP_PERIOD_SECONDS,
                         "failureThreshold": STARTUP_BUDGET_SECONDS // STARTUP_PERIOD_SECONDS},  # fmt: skip
        "livenessProbe": {"httpGet": {"path": LIVENESS_PATH, "port": "http"}, "periodSeconds": 10,
                          "timeoutSeconds": 2, "failureThreshold": 3},  # fmt: skip
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 1},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "capabilities": {"drop": ["ALL"]}},  # fmt: skip
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir, not the host's /tmp
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "model-cache", "emptyDir": {"sizeLimit": deployment.resources.model_cache}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if config.auth is not None:
        container["volumeMounts"].append({"name": "auth", "mountPath": "/var/run/secrets/inference-auth",
                                          "readOnly": True})  # fmt: skip
        volumes.append({"name": "auth", "secret": {"secretName": AUTH_SECRET, "defaultMode": 0o440}})
    if signs(deployment, mirror_key):
        container["volumeMounts"].append({"name": "mirror-key", "mountPath": MIRROR_KEY_PATH, "readOnly": True})
        volumes.append({"name": "mirror-key", "configMap": {"name": MIRROR_KEY_CONFIG_MAP}})
    spread_labels = {"matchLabels": selector(deployment.name)}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        # The server never calls the Kubernetes API; IRSA's webhook projects its own token volume.
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(deployment),
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},  # fmt: skip
        "topologySpreadConstraints": [
            # One replica per node where possible; across zones as far as capacity allows
            # (reserved capacity lives in one AZ, so zone spread must not block scheduling).
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": spread_labels},
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": spread_labels},
        ],  # fmt: skip
        "containers": [container],
        "volumes": volumes,
        **_scheduling(deployment, target),
    }
    if target.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": target.image_pull_secret}]
    return _object(
        "apps/v1", "Deployment", deployment.name, config.namespace, labels(deployment.name, version),
        spec={
            "replicas": deployment.replicas.min,  # the HPA owns the count from here on
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(deployment.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(deployment.name, version),
                                      **({"annotations": {IMAGE_TAG_ANNOTATION: image_tag}} if image_tag else {})},
                         "spec": pod_spec},
        },
    )  # fmt: skip


TRAFFIC_ROLE_LABEL = "platform.gpu-inference/traffic"  # stable | canary: the Services a canary's entry splits between
SERVICE_PORT = 80
ROLLOUTS_API = "argoproj.io/v1alpha1"  # Argo Rollouts' Rollout and AnalysisTemplate


def traffic_service(deployment: str, role: str) -> str:
    """The Service Argo Rollouts narrows to the ``stable`` or ``canary`` ReplicaSet."""
    return f"{deployment}-{role}"


def service(deployment: ModelDeploymentConfig, config: InferenceConfig, version: str, role: str | None = None) -> dict[str, Any]:
    """The deployment's Service (every pod); with ``role``, the ``<name>-stable`` or
    ``<name>-canary`` Service Argo Rollouts narrows to one ReplicaSet for an entry's split."""
    name, object_labels = deployment.name, labels(deployment.name, version)
    if role is not None:
        name, object_labels = traffic_service(deployment.name, role), {**object_labels, TRAFFIC_ROLE_LABEL: role}
    return _object("v1", "Service", name, config.namespace, object_labels,
                   spec={"type": "ClusterIP", "selector": selector(deployment.name),
                         "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]})  # fmt: skip


def workload_ref(deployment: ModelDeploymentConfig) -> dict[str, str]:
    """What runs the pods: an Argo Rollout for a deployment with a canary, else a Deployment."""
    if deployment.canary is not None:
        return {"apiVersion": ROLLOUTS_API, "kind": "Rollout", "name": deployment.name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment.name}


def autoscaler(deployment: ModelDeploymentConfig, config: InferenceConfig, version: str) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    if config.metrics_adapter:  # served by prometheus-adapter (or KEDA) from the server's own gauge
        metrics.append({"type": "Pods", "pods": {"metric": {"name": QUEUE_DEPTH_METRIC},
                        "target": {"type": "AverageValue", "averageValue": str(config.queue_depth_target)}}})  # fmt: skip
    return _object(
        "autoscaling/v2", "HorizontalPodAutoscaler", deployment.name, config.namespace,
        labels(deployment.name, version),
        spec={
            "scaleTargetRef": workload_ref(deployment),
            "minReplicas": deployment.replicas.min,
            "maxReplicas": deployment.replicas.max,
            "metrics": metrics,
            # GPU replicas take minutes to start: scale up at once, give back slowly.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}},
        },
    )  # fmt: skip


def disruption_budget(deployment: ModelDeploymentConfig, config: InferenceConfig, version: str) -> dict[str, Any]:
    return _object("policy/v1", "PodDisruptionBudget", deployment.name, config.namespace,
                   labels(deployment.name, version),
                   spec={"minAvailable": deployment.replicas.min_available,
                         "selector": {"matchLabels": selector(deployment.name)},
                         "unhealthyPodEvictionPolicy": "AlwaysAllow"})  # fmt: skip


def network_policy(deployment: ModelDeploymentConfig, config: InferenceConfig, target: TargetCluster,
                   version: str) -> dict[str, Any]:  # fmt: skip
    """Ingress from the gateway and Prometheus namespaces (and the target's client networks) only;
    egress to DNS and HTTPS endpoints."""
    sources: list[dict[str, Any]] = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
                                            for ns in (config.ingress_namespace, config.prometheus_namespace)]  # fmt: skip
    sources += [{"ipBlock": {"cidr": cidr}} for cidr in target.client_cidrs]
    if deployment.expose:  # the load balancer reaches the pods directly (IP targets), and health-checks them
        sources += [{"ipBlock": {"cidr": cidr}} for cidr in target.load_balancer_cidrs]
    egress: list[dict[str, Any]] = [{
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }]  # fmt: skip
    if target.egress_cidrs:
        egress.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in target.egress_cidrs],
                       "ports": [{"protocol": "TCP", "port": 443}]})  # fmt: skip
    return _object(
        "networking.k8s.io/v1", "NetworkPolicy", deployment.name, config.namespace, labels(deployment.name, version),
        spec={"podSelector": {"matchLabels": selector(deployment.name)}, "policyTypes": ["Ingress", "Egress"],
              "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": SERVER_PORT}]}],
              "egress": egress},
    )  # fmt: skip


ROLLOUT_HASH_LABEL = "rollouts-pod-template-hash"  # Argo Rollouts' label on each ReplicaSet's pods


def service_monitor(deployment: ModelDeploymentConfig, config: InferenceConfig, version: str) -> dict[str, Any]:
    """Scrapes each pod once, through the deployment's own Service (not the stable/canary pair),
    and copies the ReplicaSet's hash onto every series: the canary analysis reads it."""
    return _object("monitoring.coreos.com/v1", "ServiceMonitor", deployment.name, config.namespace,
                   labels(deployment.name, version),
                   spec={"selector": {"matchLabels": selector(deployment.name),
                                      "matchExpressions": [{"key": TRAFFIC_ROLE_LABEL, "operator": "DoesNotExist"}]},
                         "namespaceSelector": {"matchNames": [config.namespace]},
                         "podTargetLabels": [ROLLOUT_HASH_LABEL],
                         "endpoints": [{"port": "http", "path": METRICS_PATH, "interval": "15s"}]})  # fmt: skip

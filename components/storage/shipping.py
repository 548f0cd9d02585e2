"""The hot tier's sizing and the log shipper (Fluent Bit) that feeds the buffer (pure).

Sizing, from the expected log volume and the hot retention:

- each node's share is ``gbPerDay / expectedNodes``;
- Fluent Bit's filesystem buffer for the Firehose output is capped at ``retentionDays``
  of that share (with 25 % headroom): if Firehose or S3 is unreachable, that many days
  wait on the node and nothing is dropped; beyond it the oldest chunks go first;
- kubelet rotates each container's log at ``containerLogMaxSize`` and keeps
  ``containerLogMaxFiles``, sized so the node's share for ``retentionDays`` fits.

Audit events (``"audit": "v1"``, :mod:`components.storage.audit`) leave the log stream for
the audit stream. Both outputs get the same cap: the node's whole share was sized for, and
the two buffers together hold only what the node actually logged during an outage, so
neither drops an event before ``retentionDays`` and the disk holds no more than sized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import HotTierConfig, LogShippingConfig
from components.storage import audit
from components.gpu.scheduling import gpu_toleration

RUNTIME = Path(__file__).resolve().parent / "runtime"
COMPONENT_SCRIPT = "component.lua"
NAME = "fluent-bit"
SERVICE_ACCOUNT = "fluent-bit"
BUFFER_DIR = "/var/lib/fluent-bit"
HEADROOM = 1.25
CONTAINER_LOG_FILES = 5
CONTAINER_LOG_MIN_MIB, CONTAINER_LOG_MAX_MIB = 10, 1024
METRICS_PORT = 2020


@dataclass(frozen=True)
class HotSizing:
    node_gb_per_day: float
    buffer_limit_mib: int  # Fluent Bit storage.total_limit_size of the Firehose output
    container_log_max_mib: int  # kubelet containerLogMaxSize
    container_log_files: int  # kubelet containerLogMaxFiles

    @property
    def hot_log_gib(self) -> float:
        """Logs a node may hold at most: rotated container logs plus a full buffer."""
        return (self.buffer_limit_mib + self.container_log_max_mib * self.container_log_files) / 1024


def hot_sizing(hot: HotTierConfig, shipping: LogShippingConfig) -> HotSizing:
    node_gb_per_day = shipping.gb_per_day / shipping.expected_nodes
    retained_mib = node_gb_per_day * 1024 * hot.retention_days
    buffer_limit = math.ceil(retained_mib * HEADROOM)
    per_file = math.ceil(retained_mib / CONTAINER_LOG_FILES)
    return HotSizing(
        node_gb_per_day=node_gb_per_day,
        buffer_limit_mib=buffer_limit,
        container_log_max_mib=min(CONTAINER_LOG_MAX_MIB, max(CONTAINER_LOG_MIN_MIB, per_file)),
        container_log_files=CONTAINER_LOG_FILES,
    )


def kubelet_log_rotation(sizing: HotSizing) -> dict[str, Any]:
    """nodeadm ``spec.kubelet.config`` keys (KubeletConfiguration) for container-log rotation."""
    return {"containerLogMaxSize": f"{sizing.container_log_max_mib}Mi", "containerLogMaxFiles": sizing.container_log_files}


AUDIT_TAG_PREFIX = "audit"
AUDIT_CREDENTIALS_SECRET = "audit-shipper-aws"  # outside EKS: the IAM user's key (components/storage)
AUDIT_EMITTER = "audit_emitter"


def fluent_bit_config(*, region: str, stream_name: str | None, audit_stream_name: str, sizing: HotSizing) -> str:
    """fluent-bit.conf: tail container logs, add Kubernetes metadata and ``component``, move audit
    events to their own tag, ship logs and audit events to their Firehose streams.

    The rewrite_tag filter re-emits a matching record under ``audit.<tag>`` (through a
    filesystem-buffered emitter, so a restart loses none) and drops it from ``kube.*``
    (``false``): an audit event is in the audit bucket, never in the logs bucket too.

    ``stream_name`` None (the private cloud, which keeps its own logs): audit events only;
    the other records match no output, and Fluent Bit drops them.
    """
    logs_output = f"""
[OUTPUT]
    Name                     kinesis_firehose
    Match                    kube.*
    region                   {region}
    delivery_stream          {stream_name}
    time_key                 time
    time_key_format          %Y-%m-%dT%H:%M:%S.%3NZ
    Retry_Limit              False
    storage.total_limit_size {sizing.buffer_limit_mib}M
""" if stream_name is not None else ""  # fmt: skip
    return f"""\
[SERVICE]
    Flush                     5
    Log_Level                 info
    HTTP_Server               On
    HTTP_Listen               0.0.0.0
    HTTP_Port                 {METRICS_PORT}
    Health_Check              On
    storage.path              {BUFFER_DIR}/buffer
    storage.sync              normal
    storage.backlog.mem_limit 50M

[INPUT]
    Name              tail
    Tag               kube.*
    Path              /var/log/containers/*.log
    Exclude_Path      /var/log/containers/{NAME}-*.log
    multiline.parser  cri
    DB                {BUFFER_DIR}/tail.db
    DB.locking        true
    Mem_Buf_Limit     50MB
    Skip_Long_Lines   On
    Refresh_Interval  10
    storage.type      filesystem

[FILTER]
    Name                kubernetes
    Match               kube.*
    Merge_Log           On
    Keep_Log            Off
    Labels              On
    Annotations         Off
    K8S-Logging.Exclude On

[FILTER]
    Name    lua
    Match   kube.*
    script  /fluent-bit/etc/{COMPONENT_SCRIPT}
    call    set_component

[FILTER]
    Name                  rewrite_tag
    Match                 kube.*
    Rule                  ${audit.MARKER_KEY} {audit.ROUTING_REGEX} {AUDIT_TAG_PREFIX}.$TAG false
    Emitter_Name          {AUDIT_EMITTER}
    Emitter_Storage.type  filesystem
    Emitter_Mem_Buf_Limit 10M
{logs_output}
[OUTPUT]
    Name                     kinesis_firehose
    Match                    {AUDIT_TAG_PREFIX}.*
    region                   {region}
    delivery_stream          {audit_stream_name}
    Retry_Limit              False
    storage.total_limit_size {sizing.buffer_limit_mib}M
"""


def component_script() -> str:
    return (RUNTIME / COMPONENT_SCRIPT).read_text()


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "gpu-inference-platform"}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def kubernetes_objects(shipping: LogShippingConfig, role_arn: Any | None, config_text: Any,
                       credentials_secret: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Namespace, ServiceAccount (IRSA), RBAC for the kubernetes filter, ConfigMap and the DaemonSet.

    ``role_arn`` and ``config_text`` may be Pulumi outputs; nothing here looks inside them.
    Outside EKS there is no IRSA: ``credentials_secret`` names the Secret whose
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` the container gets instead.
    """
    ns = shipping.namespace
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(NAME, ns),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": NAME},
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "priorityClassName": "system-node-critical",
                    # Every node ships its logs: GPU nodes carry a NoSchedule taint.
                    "tolerations": [gpu_toleration(), {"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": NAME, "image": shipping.image,
                        "ports": [{"name": "http", "containerPort": METRICS_PORT, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                        "livenessProbe": {"httpGet": {"path": "/api/v1/health", "port": "http"}, "periodSeconds": 30},
                        "readinessProbe": {"httpGet": {"path": "/api/v1/health", "port": "http"}, "periodSeconds": 10},
                        # Reads root-owned container logs; writes nothing but its buffer.
                        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}},
                        "volumeMounts": [
                            {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
                            {"name": "buffer", "mountPath": BUFFER_DIR},
                            {"name": "config", "mountPath": "/fluent-bit/etc/fluent-bit.conf", "subPath": "fluent-bit.conf"},
                            {"name": "config", "mountPath": f"/fluent-bit/etc/{COMPONENT_SCRIPT}", "subPath": COMPONENT_SCRIPT},
                        ],
                    }],
                    "volumes": [
                        {"name": "varlog", "hostPath": {"path": "/var/log"}},
                        {"name": "buffer", "hostPath": {"path": BUFFER_DIR, "type": "DirectoryOrCreate"}},
                        {"name": "config", "configMap": {"name": NAME}},
                    ],
                },
            },
        },
    }  # fmt: skip
    if credentials_secret is not None:
        [container] = daemonset["spec"]["template"]["spec"]["containers"]
        container["env"] = [{"name": key, "valueFrom": {"secretKeyRef": {"name": credentials_secret, "key": key}}}
                            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {**_meta(SERVICE_ACCOUNT, ns), **(
            {"annotations": {"eks.amazonaws.com/role-arn": role_arn}} if role_arn is not None else {})}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(NAME),
         "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(NAME),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(NAME, ns),
         "data": {"fluent-bit.conf": config_text, COMPONENT_SCRIPT: component_script()}},
        daemonset,
    ]  # fmt: skip

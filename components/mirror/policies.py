"""The model mirror's decisions as pure functions: IAM, caching, edge settings, Kubernetes objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from components.base import derived
from components.config import MirrorConfig

NAMESPACE = "model-mirror"
SYNC_SERVICE_ACCOUNT = "mirror-sync"
APP_PORT = 8080
RUN_AS = 10001
EDGE_FUNCTION = Path(__file__).parent / "edge" / "blob_headers.js"
# AWS-managed CloudFront policies (fixed, documented ids).
MANAGED_CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
MANAGED_ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"

# Everything but blobs goes to the app (Lambda URL): the Host header must stay the
# function URL's, so the origin request policy forwards everything except it.
API_BEHAVIOR: dict[str, Any] = {
    "target_origin_id": "app",
    "viewer_protocol_policy": "redirect-to-https",
    "allowed_methods": ["GET", "HEAD"],
    "cached_methods": ["GET", "HEAD"],
    "compress": True,
    "origin_request_policy_id": MANAGED_ALL_VIEWER_EXCEPT_HOST,
}
BLOB_BEHAVIOR: dict[str, Any] = {
    "path_pattern": "/blobs/*",
    "target_origin_id": "store",
    "viewer_protocol_policy": "redirect-to-https",
    "allowed_methods": ["GET", "HEAD"],
    "cached_methods": ["GET", "HEAD"],
    "compress": False,  # weights don't compress; Range requests need the stored bytes
    "cache_policy_id": MANAGED_CACHING_OPTIMIZED,  # key: the path; query strings are not part of it
}


def url_host(url: str) -> str:
    """``https://abc.lambda-url.us-east-1.on.aws/`` -> ``abc.lambda-url.us-east-1.on.aws``."""
    return urlparse(url).hostname or url


def edge_function_code() -> str:
    return EDGE_FUNCTION.read_text(encoding="utf-8")


def api_cache_policy() -> dict[str, Any]:
    """The app's own Cache-Control decides (a year by commit, a minute by branch name)."""
    return {
        "comment": "Hub API and resolve redirects: TTL from the origin's Cache-Control",
        "min_ttl": 0,
        "default_ttl": 0,
        "max_ttl": 31536000,
        "parameters_in_cache_key_and_forwarded_to_origin": {
            "cookies_config": {"cookie_behavior": "none"},
            "headers_config": {"header_behavior": "none"},
            # recursive, cursor, blobs, expand change the answer
            "query_strings_config": {"query_string_behavior": "all"},
            "enable_accept_encoding_gzip": True,
            "enable_accept_encoding_brotli": True,
        },
    }


def distribution_settings(config: MirrorConfig) -> dict[str, Any]:
    geo = config.geo_restriction
    return {
        "enabled": True,
        "comment": f"model mirror {config.domain_name}",
        "aliases": [config.domain_name],
        "http_version": "http2and3",
        "is_ipv6_enabled": True,
        "price_class": config.price_class,
        "restrictions": {"geo_restriction": {"restriction_type": geo.restriction_type, "locations": list(geo.locations)}},
        "viewer_certificate": {"acm_certificate_arn": config.certificate_arn, "ssl_support_method": "sni-only",
                               "minimum_protocol_version": "TLSv1.2_2021"},
    }  # fmt: skip


def store_bucket_policy(bucket_arn: str, distribution_arn: str) -> str:
    """CloudFront (this distribution only) reads blobs; nothing arrives without TLS."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "CloudFrontReadsBlobs", "Effect": "Allow", "Principal": {"Service": "cloudfront.amazonaws.com"},
         "Action": "s3:GetObject", "Resource": f"{bucket_arn}/blobs/*",
         "Condition": {"StringEquals": {"AWS:SourceArn": distribution_arn}}},
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [bucket_arn, f"{bucket_arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]})  # fmt: skip


def reader_policy(bucket_arn: str) -> str:
    """The edge origin: read and list, nothing else."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn},
        {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket_arn}/*"},
    ]})  # fmt: skip


# What a key administrator may do to the signing key: everything but use it (no kms:Sign, so
# no identity policy in the account can grant signing; only the key policy's sync role signs).
_KEY_ADMIN = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
              "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
              "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]  # fmt: skip


def signing_key_policy(account_id: str, sync_role_arn: str) -> str:
    """The manifest-signing key: only the sync role signs; anyone in the account may verify."""
    root = {"AWS": f"arn:aws:iam::{account_id}:root"}
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountAdministersButCannotSign", "Effect": "Allow", "Principal": root, "Action": _KEY_ADMIN, "Resource": "*"},
        {"Sid": "SyncSigns", "Effect": "Allow", "Principal": {"AWS": sync_role_arn}, "Action": "kms:Sign", "Resource": "*"},
        {"Sid": "PlatformVerifies", "Effect": "Allow", "Principal": root,
         "Action": ["kms:Verify", "kms:GetPublicKey", "kms:DescribeKey"], "Resource": "*"},
    ]})  # fmt: skip


def signer_policy(key_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "SignManifests", "Effect": "Allow", "Action": "kms:Sign", "Resource": key_arn}]})  # fmt: skip


def writer_policy(bucket_arn: str) -> str:
    """The sync job: the only principal that writes (no delete: blobs are content-addressed)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn},
        {"Sid": "ReadWrite", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": f"{bucket_arn}/*"},
    ]})  # fmt: skip


# --------------------------------------------------------------------------- Kubernetes

_LABELS = {"app.kubernetes.io/name": "model-mirror", "app.kubernetes.io/part-of": "gpu-inference-platform"}


def namespace_metadata() -> dict[str, Any]:
    return {"name": NAMESPACE, "labels": {**_LABELS, "pod-security.kubernetes.io/enforce": "restricted"}}


def sync_service_account(role_arn: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": SYNC_SERVICE_ACCOUNT, "namespace": NAMESPACE, "labels": _LABELS,
                         "annotations": {"eks.amazonaws.com/role-arn": role_arn}}}  # fmt: skip


def _container(name: str, image: Any, args: list[str], env: list[dict[str, Any]], resources: dict[str, Any],
               **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name, "image": image, "args": args, "env": env, "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - the spool of large files
        **extra,
    }  # fmt: skip


def _sync_pod(config: MirrorConfig, image: Any, env: list[dict[str, Any]], upstream: str,
              service_account: str | None) -> dict[str, Any]:  # fmt: skip
    args = ["sync", "--bucket", "$(MIRROR_BUCKET)", "--upstream", upstream, "--workers", str(config.sync_workers),
            "--no-progress", *[arg for r in config.repos for arg in ("--repo", f"{r.repo}@{r.revision}")]]  # fmt: skip
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
        # The subject of its mirror.publish audit events (components/mirror/runtime/sync.py).
        "containers": [_container("sync", image, args, [*env, {"name": "PLATFORM_AUDIT_SUBJECT", "value":
                                  f"system:serviceaccount:{NAMESPACE}:{service_account or 'default'}"}],
                                  {"requests": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "20Gi"},
                                   "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "40Gi"}})],  # fmt: skip
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "40Gi"}}],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return spec


def _cronjob(name: str, config: MirrorConfig, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": _LABELS},
        "spec": {
            "schedule": config.schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",  # two syncs of one repo would race on its ref
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            "jobTemplate": {"spec": {
                "backoffLimit": 2,  # a retry resumes: finished blobs are not transferred again
                "activeDeadlineSeconds": 6 * 3600,
                "template": {"metadata": {"labels": {**_LABELS, "app.kubernetes.io/component": "sync"}}, "spec": pod},
            }},
        },
    }  # fmt: skip


def sync_cronjob(config: MirrorConfig, image: Any, bucket: Any, upstream: str, signing_key: Any = None) -> dict[str, Any]:
    """The scheduled sync on EKS: writes the bucket through IRSA (the only writer) and signs each
    manifest with the KMS key (``signing_key``: its ARN)."""
    env = [{"name": "MIRROR_BUCKET", "value": bucket}, {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
    if signing_key is not None:
        env.append({"name": "MIRROR_SIGNING_KEY", "value": derived(signing_key, lambda arn: f"kms:{arn}")})
    return _cronjob("mirror-sync", config, _sync_pod(config, image, env, upstream, SYNC_SERVICE_ACCOUNT))


def sync_network_policy(extra_ports: tuple[int, ...] = ()) -> dict[str, Any]:
    """Sync pods: no ingress; egress DNS and HTTPS (upstream and S3), plus a store's own port."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "mirror-sync", "namespace": NAMESPACE, "labels": _LABELS},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "sync"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"ports": [{"protocol": "TCP", "port": port} for port in sorted({443, *extra_ports})]},
            ],
        },
    }  # fmt: skip


ONPREM_SIGNING_SECRET = "mirror-signing-key"  # the on-prem sync's PEM private key (from a Pulumi secret)
SIGNING_KEY_PATH = "/var/run/mirror-signing"


def onprem_signing_secret(private_key_pem: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": ONPREM_SIGNING_SECRET, "namespace": NAMESPACE, "labels": _LABELS},
            "stringData": {"key.pem": private_key_pem}}  # fmt: skip


def private_cloud_objects(config: MirrorConfig, image: Any, aws_mirror_url: str, signs: bool = False) -> list[dict[str, Any]]:
    """The private cloud's mirror: the same app over on-prem storage, synced from the AWS mirror.

    With ``signs``, its sync signs each revision it publishes with the key in
    :data:`ONPREM_SIGNING_SECRET` (the same signature format as the AWS mirror's KMS key).
    """
    onprem = config.private_cloud
    assert onprem is not None
    env = [
        {"name": "MIRROR_BUCKET", "value": onprem.bucket},
        {"name": "AWS_ENDPOINT_URL_S3", "value": onprem.s3_endpoint},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": onprem.credentials_secret,
                                                                     "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": onprem.credentials_secret,
                                                                         "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},  # S3-compatible stores ignore it; boto3 needs one
    ]  # fmt: skip
    app_labels = {**_LABELS, "app.kubernetes.io/component": "app"}
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    app_container = _container(
        "app", image, ["serve", "--bucket", "$(MIRROR_BUCKET)", "--host", "0.0.0.0", "--port", str(APP_PORT)], env,
        {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        ports=[{"name": "http", "containerPort": APP_PORT, "protocol": "TCP"}],
        readinessProbe=probe, livenessProbe=probe,
    )  # fmt: skip
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "mirror", "namespace": NAMESPACE, "labels": app_labels},
        "spec": {
            "replicas": onprem.replicas,
            "selector": {"matchLabels": app_labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": app_labels}, "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                               "whenUnsatisfiable": "ScheduleAnyway",
                                               "labelSelector": {"matchLabels": app_labels}}],
                "containers": [app_container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
            }},
        },
    }  # fmt: skip
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "mirror", "namespace": NAMESPACE, "labels": app_labels},
        "spec": {"selector": app_labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }  # fmt: skip
    app_policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "mirror", "namespace": NAMESPACE, "labels": _LABELS},
        "spec": {"podSelector": {"matchLabels": app_labels}, "policyTypes": ["Ingress"],
                 "ingress": [{"ports": [{"protocol": "TCP", "port": APP_PORT}]}]},
    }  # fmt: skip
    sync_pod = _sync_pod(config, image, env, aws_mirror_url, None)
    if signs:
        container = sync_pod["containers"][0]
        container["env"] = [*container["env"], {"name": "MIRROR_SIGNING_KEY", "value": f"file:{SIGNING_KEY_PATH}/key.pem"}]
        container["volumeMounts"] = [*container["volumeMounts"],
                                     {"name": "signing-key", "mountPath": SIGNING_KEY_PATH, "readOnly": True}]  # fmt: skip
        sync_pod["volumes"] = [*sync_pod["volumes"],
                               {"name": "signing-key", "secret": {"secretName": ONPREM_SIGNING_SECRET, "defaultMode": 0o400}}]  # fmt: skip
    sync = _cronjob("mirror-sync", config, sync_pod)
    endpoint = urlparse(onprem.s3_endpoint)
    store_port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    # The app reads the on-prem store too: its egress is DNS and the store's port.
    app_egress = sync_network_policy((store_port,))
    app_policy["spec"]["policyTypes"] = ["Ingress", "Egress"]
    app_policy["spec"]["egress"] = app_egress["spec"]["egress"]
    budget = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "mirror", "namespace": NAMESPACE, "labels": app_labels},
        # One replica may go at a time (node drains); a single replica may always be drained.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": app_labels}},
    }  # fmt: skip
    return [deployment, service, app_policy, budget, sync, sync_network_policy((store_port,))]

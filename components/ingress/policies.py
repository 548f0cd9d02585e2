"""The entry to the model servers from outside a cluster (pure): ALB and WAF on EKS, ingress-nginx on premises.

Decisions live here and are tested directly; ``component.py`` only declares them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from components.base import derived
from components.config import EksIngressConfig, InferenceConfig, ModelDeploymentConfig, PrivateIngressConfig, WafConfig
from components.inference.manifests import labels
from components.inference.rollouts import ingress_backend

# The controller's IAM policy as AWS publishes it for this app version, taken unchanged from
# AWS's own npm package (tests/ingress/test_policies.py compares it with the package).
CONTROLLER_APP_VERSION = "v2.8.2"
CONTROLLER_POLICY = Path(__file__).with_name(f"aws-load-balancer-controller-iam-policy-{CONTROLLER_APP_VERSION}.json")
CONTROLLER_POLICY_SOURCE = ("@aws-cdk/aws-eks-v2-alpha", "2.240.0-alpha.0",
                            f"package/lib/addons/alb-iam_policy-{CONTROLLER_APP_VERSION}.json")  # fmt: skip
CONTROLLER_NAMESPACE = "kube-system"
CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"
EKS_CHARTS = "https://aws.github.io/eks-charts"
INGRESS_NGINX_CHARTS = "https://kubernetes.github.io/ingress-nginx"
ALB_CLASS = "alb"
HEALTH_PATH = "/readyz"  # the servers' readiness: a replica still loading or draining gets no traffic


def controller_policy() -> str:
    return json.dumps(json.loads(CONTROLLER_POLICY.read_text()))


def controller_values(cluster_name: Any, region: str, vpc_id: Any, role_arn: Any, node_selector: dict[str, str]) -> dict:
    return {
        "clusterName": cluster_name, "region": region, "vpcId": vpc_id, "replicaCount": 2,
        "serviceAccount": {"create": True, "name": CONTROLLER_SERVICE_ACCOUNT,
                           "annotations": {"eks.amazonaws.com/role-arn": role_arn}},
        "nodeSelector": dict(node_selector),
        "createIngressClassResource": True, "ingressClass": ALB_CLASS,
        # WAFv2 only: no Shield Advanced or WAF Classic calls (the vendored policy allows them).
        "enableShield": False, "enableWaf": False, "enableWafv2": True,
    }  # fmt: skip


def host(deployment: ModelDeploymentConfig, domain: str) -> str:
    return f"{deployment.name}.{domain}"


# --------------------------------------------------------------------------- WAF


def greater_than_regex(limit: int) -> str:
    """A regex matching exactly the decimal integers above ``limit`` (leading zeros allowed).

    WAF compares header values as text, so "Content-Length above the server's body limit"
    is a pattern: more digits than the limit, or as many with a larger digit after a shared prefix.
    """
    digits = str(limit)
    options = [f"[1-9][0-9]{{{len(digits)},}}"]
    for index, digit in enumerate(digits):
        if digit != "9":
            rest = len(digits) - index - 1
            options.append(f"{digits[:index]}[{int(digit) + 1}-9]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return "^0*(" + "|".join(options) + ")$"


def _visibility(metric: str) -> dict[str, Any]:
    return {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": metric}


def waf_rules(config: WafConfig, max_body_bytes: int, metric_prefix: str) -> list[dict[str, Any]]:
    """The web ACL's rules in the WAFv2 API's shape (CreateWebACL ``Rules``), in priority order.

    Oversized bodies are refused by their Content-Length: WAF inspects at most the first 8 KB
    of an ALB request's body, so it can't measure a 1 MB prompt. A chunked body without a
    length is still refused by the server itself (413). Every rule emits CloudWatch metrics,
    so blocked requests are counted per rule.
    """
    rules: list[dict[str, Any]] = []
    for priority, group in enumerate(config.managed_rule_groups):
        statement: dict[str, Any] = {"VendorName": "AWS", "Name": group}
        overrides = [name for name in config.count_only_rules if group == "AWSManagedRulesCommonRuleSet"]
        if overrides:
            statement["RuleActionOverrides"] = [{"Name": name, "ActionToUse": {"Count": {}}} for name in overrides]
        rules.append({"Name": group, "Priority": priority, "OverrideAction": {"None": {}},
                      "Statement": {"ManagedRuleGroupStatement": statement},
                      "VisibilityConfig": _visibility(f"{metric_prefix}-{group}")})  # fmt: skip
    base = len(rules)
    rules.append({
        "Name": "body-too-large", "Priority": base, "Action": {"Block": {}},
        "Statement": {"RegexMatchStatement": {
            "RegexString": greater_than_regex(max_body_bytes),
            "FieldToMatch": {"SingleHeader": {"Name": "content-length"}},
            "TextTransformations": [{"Priority": 0, "Type": "NONE"}]}},
        "VisibilityConfig": _visibility(f"{metric_prefix}-body-too-large"),
    })  # fmt: skip
    rules.append({
        "Name": "rate-per-ip", "Priority": base + 1, "Action": {"Block": {}},
        "Statement": {"RateBasedStatement": {"Limit": config.rate_limit_per_5_minutes, "AggregateKeyType": "IP",
                                             "EvaluationWindowSec": 300}},
        "VisibilityConfig": _visibility(f"{metric_prefix}-rate-per-ip"),
    })  # fmt: skip
    return rules


_SNAKE_EXCEPTIONS = {"CloudWatchMetricsEnabled": "cloudwatch_metrics_enabled"}


def to_pulumi(value: Any) -> Any:
    """The API shape in pulumi-aws's argument names (snake case; ``CloudWatch`` is one word there)."""
    if isinstance(value, dict):
        return {_SNAKE_EXCEPTIONS.get(k) or re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): to_pulumi(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [to_pulumi(item) for item in value]
    return value


# --------------------------------------------------------------------------- Kubernetes objects


def alb_tags_annotation(tags: dict[str, str]) -> str:
    """``k=v,...`` as the controller reads it (TagConfig refuses what this can't carry)."""
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def alb_annotations(config: EksIngressConfig, group: str, certificate_arn: Any, web_acl_arn: Any, log_bucket: Any,
                    deregistration_seconds: int, tags: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """aws-load-balancer-controller annotations: one shared ALB (``group``) for every exposed deployment.

    Values may be Pulumi outputs (ARNs, the bucket); those annotations are joined once known.
    Every Ingress of the group carries the same load-balancer-level ones (the controller refuses conflicts).
    """
    attributes = {
        "idle_timeout.timeout_seconds": str(config.idle_timeout_seconds),  # streamed completions stay open
        "routing.http.drop_invalid_header_fields.enabled": "true",
        "routing.http.xff_header_processing.mode": "append",  # the client's address reaches the server
        "access_logs.s3.enabled": "true", "access_logs.s3.prefix": "alb",
    }  # fmt: skip
    return {
        "alb.ingress.kubernetes.io/group.name": group,
        "alb.ingress.kubernetes.io/scheme": config.scheme,
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTP": 80}, {"HTTPS": 443}]),
        "alb.ingress.kubernetes.io/ssl-redirect": "443",
        "alb.ingress.kubernetes.io/ssl-policy": config.ssl_policy,
        "alb.ingress.kubernetes.io/certificate-arn": certificate_arn,
        "alb.ingress.kubernetes.io/wafv2-acl-arn": web_acl_arn,
        "alb.ingress.kubernetes.io/inbound-cidrs": ",".join(str(c) for c in config.inbound_cidrs),
        "alb.ingress.kubernetes.io/healthcheck-path": HEALTH_PATH,
        "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "10",
        "alb.ingress.kubernetes.io/healthy-threshold-count": "2",
        "alb.ingress.kubernetes.io/unhealthy-threshold-count": "2",
        "alb.ingress.kubernetes.io/success-codes": "200",
        "alb.ingress.kubernetes.io/load-balancer-attributes": derived(log_bucket, lambda b: _attributes(attributes, b)),
        # A draining replica finishes its requests before the target is gone.
        "alb.ingress.kubernetes.io/target-group-attributes": f"deregistration_delay.timeout_seconds={deregistration_seconds}",
        "alb.ingress.kubernetes.io/tags": alb_tags_annotation(tags),
    }  # fmt: skip


def _attributes(attributes: dict[str, str], bucket: str) -> str:
    return ",".join(f"{k}={v}" for k, v in {**attributes, "access_logs.s3.bucket": bucket}.items())


def ingress(deployment: ModelDeploymentConfig, config: InferenceConfig, version: str, class_name: str, domain: str,
            annotations: dict[str, Any], tls_secret: str | None) -> dict[str, Any]:  # fmt: skip
    """One Ingress per exposed deployment: <name>.<domain>, every path to its Service's port (or,
    with a canary, to what Argo Rollouts splits: :func:`components.inference.rollouts.ingress_backend`)."""
    name = host(deployment, domain)
    spec: dict[str, Any] = {
        "ingressClassName": class_name,
        "rules": [{"host": name, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                                     "backend": ingress_backend(deployment)}]}}],
    }  # fmt: skip
    if tls_secret is not None:
        spec["tls"] = [{"hosts": [name], "secretName": tls_secret}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": deployment.name, "namespace": config.namespace,
                         "labels": labels(deployment.name, version), "annotations": annotations},
            "spec": spec}  # fmt: skip


# --------------------------------------------------------------------------- ingress-nginx (private cloud)

# Stream-friendly proxying: no response buffering (tokens reach the client as generated).
PROXY_BUFFERING = "off"


def nginx_controller_config(config: PrivateIngressConfig, max_body_bytes: int, read_timeout_seconds: int) -> dict[str, str]:
    """ingress-nginx's ConfigMap (``controller.config``): TLS 1.3 only, the client's identity
    forwarded, body and timeout limits matching the servers'. Each key maps to the nginx
    directives of :func:`nginx_directives`, which the tests run through ``nginx -t``."""
    trusted = ",".join(str(c) for c in config.trusted_proxy_cidrs)
    return {
        "ssl-protocols": "TLSv1.3",
        "ssl-redirect": "true", "force-ssl-redirect": "true", "hsts": "true",
        # Trust X-Forwarded-For only from the load balancers in front (none: the peer is the client).
        "use-forwarded-headers": "true" if trusted else "false",
        "compute-full-forwarded-for": "true",
        **({"proxy-real-ip-cidr": trusted} if trusted else {}),
        "proxy-body-size": str(max_body_bytes),
        "proxy-read-timeout": str(read_timeout_seconds), "proxy-send-timeout": str(read_timeout_seconds),
        "proxy-buffering": PROXY_BUFFERING,
        "allow-snippet-annotations": "false",  # no user-supplied nginx config (CVE-2025-1974 class)
    }  # fmt: skip


def nginx_directives(config: PrivateIngressConfig, max_body_bytes: int, read_timeout_seconds: int) -> list[str]:
    """The plain nginx (http and location context) that :func:`nginx_controller_config` asks
    ingress-nginx for, checked by ``nginx -t`` and run for real in the tests."""
    trusted = [str(c) for c in config.trusted_proxy_cidrs]
    real_ip = [f"set_real_ip_from {cidr};" for cidr in trusted] + (
        ["real_ip_header X-Forwarded-For;", "real_ip_recursive on;"] if trusted else [])  # fmt: skip
    return [
        "ssl_protocols TLSv1.3;",
        *real_ip,
        f"client_max_body_size {max_body_bytes};",
        f"proxy_read_timeout {read_timeout_seconds}s;", f"proxy_send_timeout {read_timeout_seconds}s;",
        f"proxy_buffering {PROXY_BUFFERING};",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header Host $host;",
    ]


def nginx_values(config: PrivateIngressConfig, max_body_bytes: int, read_timeout_seconds: int) -> dict[str, Any]:
    return {"controller": {
        "ingressClassResource": {"name": config.class_name, "enabled": True, "default": False,
                                 "controllerValue": f"k8s.io/{config.class_name}"},
        "ingressClass": config.class_name,
        "config": nginx_controller_config(config, max_body_bytes, read_timeout_seconds),
        "replicaCount": 2,
        "metrics": {"enabled": True},
    }}  # fmt: skip

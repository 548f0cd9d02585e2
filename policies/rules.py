"""The guardrails as pure functions: engine-shaped (camelCase) inputs in, violation messages out.

Each function answers for one resource (or the whole stack) and knows nothing of gRPC; the
pack (``__main__.py``) wires them into pulumi-policy, and the tests drive them through the
same Analyzer interface the Pulumi CLI uses.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

ADMIN_PORTS = (22, 3389, 6443, 2379)
OPEN_CIDRS = ("0.0.0.0/0", "::/0")
VRRP = ("112", "vrrp")
MODERN_TLS = ("TLSv1.2_2021", "TLSv1.2_2025", "TLSv1.3_2025")
HTTPS_VIEWER = ("redirect-to-https", "https-only")
VPN_ENCRYPTION = ("AES256-GCM-16", "AES128-GCM-16", "AES256", "AES128")
VPN_INTEGRITY = ("SHA2-256", "SHA2-384", "SHA2-512")
VPN_DH_GROUPS = (19, 20, 21)  # ECP 256/384/521; AWS's defaults also allow MODP 1024/2048 (groups 2, 14)
COST_TAGS = ("environment", "component", "cost-center", "owner", "stack")
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob", "Rollout")  # Rollout: Argo Rollouts' Deployment
SERVING_WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:argoproj.io/v1alpha1:Rollout")


def _as_list(value: Any) -> list:
    """A list from a list, one value, or None (pulumi-policy hands over read-only list proxies)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)):
        return [value]
    return list(value) if isinstance(value, Sequence) or hasattr(value, "__iter__") else [value]


def _json(value: Any) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


# --------------------------------------------------------------------------- security


def public_access_block(props: Mapping[str, Any]) -> list[str]:
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    off = [flag for flag in flags if props.get(flag) is not True]
    return [f"public access block leaves {', '.join(off)} off"] if off else []


def bucket_policy_principals(props: Mapping[str, Any]) -> list[str]:
    problems = []
    for index, statement in enumerate(_as_list(_json(props.get("policy")).get("Statement"))):
        principal = statement.get("Principal")
        everyone = principal == "*" or (isinstance(principal, dict) and "*" in _as_list(principal.get("AWS")))
        if statement.get("Effect") == "Allow" and everyone and not statement.get("Condition"):
            problems.append(f"statement {statement.get('Sid', index)} allows any principal without a condition")
    return problems


def launch_template_hardened(props: Mapping[str, Any]) -> list[str]:
    problems = []
    if (props.get("metadataOptions") or {}).get("httpTokens") != "required":
        problems.append("instance metadata must require IMDSv2 (metadataOptions.httpTokens = required)")
    for device in _as_list(props.get("blockDeviceMappings")):
        ebs = device.get("ebs") or {}
        if ebs and str(ebs.get("encrypted")).lower() != "true":
            problems.append(f"block device {device.get('deviceName', '?')} is not encrypted")
    return problems


def ebs_volume_encrypted(props: Mapping[str, Any]) -> list[str]:
    return [] if props.get("encrypted") is True else ["EBS volume is not encrypted"]


def _covers_admin_port(rule: Mapping[str, Any]) -> list[int]:
    protocol = str(rule.get("ipProtocol", rule.get("protocol", ""))).lower()
    if protocol in ("-1", "all"):
        return list(ADMIN_PORTS)
    if protocol not in ("tcp", "6"):
        return []
    low, high = int(rule.get("fromPort", 0)), int(rule.get("toPort", 65535))
    return [port for port in ADMIN_PORTS if low <= port <= high]


def ingress_rules_safe(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    problems = []
    for rule in rules:
        cidrs = [*_as_list(rule.get("cidrBlocks")), *_as_list(rule.get("ipv6CidrBlocks")),
                 *[c for c in (rule.get("cidrIpv4"), rule.get("cidrIpv6")) if c]]  # fmt: skip
        protocol = str(rule.get("ipProtocol", rule.get("protocol", ""))).lower()
        if protocol in VRRP:
            wide = [c for c in cidrs if ipaddress.ip_network(c, strict=False).num_addresses > 1]
            if wide:
                problems.append(f"VRRP (protocol 112) admitted from {', '.join(wide)}: only the pair's own /32 addresses")
            continue
        ports = _covers_admin_port(rule)
        open_to = [c for c in cidrs if c in OPEN_CIDRS]
        if ports and open_to:
            problems.append(f"admin port(s) {', '.join(map(str, ports))} open to {', '.join(open_to)}")
    return problems


def security_group(props: Mapping[str, Any]) -> list[str]:
    return ingress_rules_safe(_as_list(props.get("ingress")))


def cloudfront_tls(props: Mapping[str, Any]) -> list[str]:
    problems = []
    certificate = props.get("viewerCertificate") or {}
    if certificate.get("minimumProtocolVersion") not in MODERN_TLS:
        problems.append(f"minimum TLS {certificate.get('minimumProtocolVersion')!r}: use TLSv1.2_2021 or newer")
    behaviors = [props.get("defaultCacheBehavior") or {}, *_as_list(props.get("orderedCacheBehaviors"))]
    for behavior in behaviors:
        if behavior.get("viewerProtocolPolicy") not in HTTPS_VIEWER:
            problems.append(f"behavior {behavior.get('pathPattern', 'default')} serves plain HTTP")
    return problems


def ingress_tls(props: Mapping[str, Any]) -> list[str]:
    """An ALB Ingress: a TLS 1.3 listener policy, HTTP redirected, WAF when internet-facing;
    any other class: TLS configured (spec.tls)."""
    spec = props.get("spec") or {}
    annotations = (props.get("metadata") or {}).get("annotations") or {}
    if spec.get("ingressClassName") != "alb":
        return [] if spec.get("tls") else ["no spec.tls: the entry would serve plain HTTP"]
    alb = "alb.ingress.kubernetes.io/"
    problems = []
    policy = annotations.get(alb + "ssl-policy")
    if not str(policy).startswith("ELBSecurityPolicy-TLS13-"):
        problems.append(f"listener policy {policy!r}: use an ELBSecurityPolicy-TLS13-* policy (TLS 1.3, no TLS 1.0/1.1)")
    if not annotations.get(alb + "ssl-redirect"):
        problems.append("HTTP is not redirected to HTTPS (alb.ingress.kubernetes.io/ssl-redirect)")
    if annotations.get(alb + "scheme") == "internet-facing" and not annotations.get(alb + "wafv2-acl-arn"):
        problems.append("internet-facing without a WAFv2 web ACL (alb.ingress.kubernetes.io/wafv2-acl-arn)")
    return problems


def eks_cluster(props: Mapping[str, Any], private_in: Sequence[str]) -> list[str]:
    problems = []
    resources = [r for config in _as_list(props.get("encryptionConfig")) for r in _as_list(config.get("resources"))]
    if "secrets" not in resources:
        problems.append("Kubernetes secrets are not envelope-encrypted with KMS (encryptionConfig.resources)")
    environment = (props.get("tags") or {}).get("environment")
    if environment in private_in and (props.get("vpcConfig") or {}).get("endpointPublicAccess") is not False:
        problems.append(f"the API endpoint is public in {environment}")
    return problems


def kms_rotation(props: Mapping[str, Any]) -> list[str]:
    """Symmetric keys rotate. KMS can't rotate asymmetric keys (signing keys): those are exempt."""
    if props.get("keyUsage") == "SIGN_VERIFY" or str(props.get("customerMasterKeySpec", "SYMMETRIC_DEFAULT")) != "SYMMETRIC_DEFAULT":
        return []
    return [] if props.get("enableKeyRotation") is True else ["key rotation is off"]


def vpn_tunnels(props: Mapping[str, Any]) -> list[str]:
    problems = []
    for tunnel in ("tunnel1", "tunnel2"):
        if _as_list(props.get(f"{tunnel}IkeVersions")) != ["ikev2"]:
            problems.append(f"{tunnel}: IKE versions must be exactly [ikev2]")
        for phase in ("Phase1", "Phase2"):
            encryption = _as_list(props.get(f"{tunnel}{phase}EncryptionAlgorithms"))
            integrity = _as_list(props.get(f"{tunnel}{phase}IntegrityAlgorithms"))
            if not encryption or set(encryption) - set(VPN_ENCRYPTION):
                problems.append(f"{tunnel} {phase.lower()}: encryption {encryption or 'AWS defaults'} (AES-GCM/AES only)")
            if not integrity or set(integrity) - set(VPN_INTEGRITY):
                problems.append(f"{tunnel} {phase.lower()}: integrity {integrity or 'AWS defaults'} (SHA-2 only)")
            groups = _as_list(props.get(f"{tunnel}{phase}DhGroupNumbers"))
            if not groups or set(groups) - set(VPN_DH_GROUPS):
                problems.append(f"{tunnel} {phase.lower()}: DH groups {groups or 'AWS defaults'} (19, 20, 21 only)")
    return problems


def iam_no_admin_star(props: Mapping[str, Any]) -> list[str]:
    problems = []
    for index, statement in enumerate(_as_list(_json(props.get("policy")).get("Statement"))):
        actions, resources = _as_list(statement.get("Action")), _as_list(statement.get("Resource"))
        if statement.get("Effect") == "Allow" and "*" in actions and "*" in resources:
            problems.append(f"statement {statement.get('Sid', index)} allows every action on every resource")
    return problems


def _pod_spec(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = manifest.get("spec") or {}
    if manifest.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("spec")) or {}


def workload_hardened(manifest: Mapping[str, Any]) -> Iterator[str]:
    pod = _pod_spec(manifest)
    pod_non_root = (pod.get("securityContext") or {}).get("runAsNonRoot") is True
    problems = []
    containers = [*_as_list(pod.get("initContainers")), *_as_list(pod.get("containers"))]
    for container in containers:
        name = container.get("name", "?")
        if not pod_non_root and (container.get("securityContext") or {}).get("runAsNonRoot") is not True:
            problems.append(f"container {name} may run as root (runAsNonRoot)")
        limits = (container.get("resources") or {}).get("limits") or {}
        if not {"cpu", "memory"} <= set(limits):
            problems.append(f"container {name} has no cpu and memory limits")
    yield from problems  # before the images: a digest only known after the push stops the check here
    for container in containers:
        if "@sha256:" not in str(container.get("image", "")):
            yield f"container {container.get('name', '?')} image {container.get('image')!r} is not pinned by digest"


# --------------------------------------------------------------------------- cost


TAGGABLE_TYPES = frozenset(
    line.strip() for line in (Path(__file__).parent / "taggable_types.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)


def cost_tags(props: Mapping[str, Any]) -> list[str]:
    tags = props.get("tags")
    if tags is not None and not isinstance(tags, Mapping):  # Auto Scaling groups: [{key, value, ...}]
        tags = {t.get("key"): t.get("value") for t in _as_list(tags)}
    missing = [key for key in COST_TAGS if not (tags or {}).get(key)]
    return [f"missing cost tags: {', '.join(missing)}"] if missing else []


def gpu_instance_types(types: Sequence[str], allowed: Sequence[str]) -> list[str]:
    wrong = [t for t in types if t and t[0] in "gp" and t not in allowed]
    return [f"GPU instance type(s) {', '.join(wrong)} not in the allowed list"] if wrong else []


def asg_instance_types(props: Mapping[str, Any]) -> list[str]:
    policy = props.get("mixedInstancesPolicy") or {}
    overrides = ((policy.get("launchTemplate") or {}).get("overrides")) or []
    return [o.get("instanceType", "") for o in overrides]


def gpu_group(props: Mapping[str, Any], max_allowed: int) -> list[str]:
    problems = []
    max_size = props.get("maxSize")
    if not isinstance(max_size, int | float) or max_size > max_allowed:
        problems.append(f"GPU group max size {max_size!r}: set one, at most {max_allowed}")
    tags = {t.get("key"): t.get("value") for t in _as_list(props.get("tags"))}
    if tags.get("k8s.io/cluster-autoscaler/node-template/label/capacity-type") == "spot":
        distribution = (props.get("mixedInstancesPolicy") or {}).get("instancesDistribution") or {}
        if distribution.get("onDemandBaseCapacity", 0) != 0 or distribution.get("onDemandPercentageAboveBaseCapacity") != 0:
            problems.append("the spot pool launches on-demand capacity (onDemand base/percentage must be 0)")
    return problems


# --------------------------------------------------------------------------- stack-wide


def resources_by_type(resources: Sequence[Mapping[str, Any]], type_token: str) -> list[Mapping[str, Any]]:
    return [r for r in resources if r["type"] == type_token]


def buckets_protected(resources: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(bucket urn, problem) for buckets without a public access block or encryption config."""
    problems = []
    guards = {
        "public access block": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "default encryption": "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    }
    for bucket in resources_by_type(resources, "aws:s3/bucket:Bucket"):
        for what, type_token in guards.items():
            attached = [g for g in resources_by_type(resources, type_token)
                        if bucket["urn"] in (g.get("propertyDependencies") or {}).get("bucket", [])]  # fmt: skip
            if not attached:
                problems.append((bucket["urn"], f"bucket {bucket['name']} has no {what}"))
    return problems


def budget_exists(resources: Sequence[Mapping[str, Any]]) -> list[str]:
    return [] if resources_by_type(resources, "aws:budgets/budget:Budget") else ["the stack declares no AWS Budget"]


def deployments_guarded(resources: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Every Deployment (or Argo Rollout) probes readiness and liveness and is covered by a PodDisruptionBudget."""
    problems = []
    budgets = [r["props"] for r in resources_by_type(resources, "kubernetes:policy/v1:PodDisruptionBudget")]
    for resource in [r for kind in SERVING_WORKLOADS for r in resources_by_type(resources, kind)]:
        manifest = resource["props"]
        pod = _pod_spec(manifest)
        for container in _as_list(pod.get("containers")):
            for probe in ("readinessProbe", "livenessProbe"):
                if not container.get(probe):
                    problems.append((resource["urn"], f"container {container.get('name')} has no {probe}"))
        labels = ((manifest.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        namespace = (manifest.get("metadata") or {}).get("namespace")
        covered = any((b.get("metadata") or {}).get("namespace") == namespace
                      and ((b.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items() <= labels.items()
                      for b in budgets)  # fmt: skip
        if not covered:
            problems.append((resource["urn"], "no PodDisruptionBudget selects its pods"))
    return problems


def multi_az(resources: Sequence[Mapping[str, Any]], ha_environments: Sequence[str]) -> list[str]:
    subnets = resources_by_type(resources, "aws:ec2/subnet:Subnet")
    environments = {(s["props"].get("tags") or {}).get("environment") for s in subnets}
    if not environments & set(ha_environments):
        return []
    zones = {s["props"].get("availabilityZone") for s in subnets}
    return [] if len(zones) >= 2 else [f"an HA environment uses {len(zones)} availability zone(s)"]

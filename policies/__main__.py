"""The platform's policy pack (pulumi-policy / CrossGuard): security, cost and reliability.

`pulumi preview --policy-pack policies` runs it under the CLI; `platformctl plan --stack S
--policy-pack policies` runs the same process through the same Analyzer gRPC interface
against the offline plan. Rules live in rules.py (pure); this file only wires them.
"""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

import rules

MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY
GPU_TYPES = ["g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge", "g5.2xlarge", "g6.xlarge", "g6.2xlarge", "g6e.xlarge",
             "g6e.2xlarge", "p4d.24xlarge"]  # fmt: skip
# System daemons that must run as root on the node (device plugins talk to the kubelet's socket
# directory) or that upstream publishes by tag: reported by the advisory policy instead.
EXEMPT_WORKLOADS = ["kube-system/nvidia-device-plugin", "logging/fluent-bit"]


def _for_type(type_tokens: tuple[str, ...], rule, config_keys: tuple[str, ...] = ()):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in type_tokens:
            return
        extra = [args.get_config()[key] for key in config_keys]
        for message in rule(args.props, *extra):
            report_violation(message)

    return validate


def _workload(exempt: bool):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        kind = args.resource_type.rsplit(":", 1)[-1]
        if not args.resource_type.startswith("kubernetes:") or kind not in rules.WORKLOAD_KINDS:
            return
        metadata = args.props.get("metadata") or {}
        key = f"{metadata.get('namespace', 'default')}/{metadata.get('name', args.name)}"
        if (key in args.get_config()["exempt"]) != exempt:
            return
        for message in rules.workload_hardened({**args.props, "kind": kind}):
            report_violation(message)

    return validate


def _stack_resources(args: StackValidationArgs) -> list[dict]:
    return [{"type": r.resource_type, "urn": r.urn, "name": r.name, "props": r.props,
             "propertyDependencies": {k: [d.urn for d in v] for k, v in r.property_dependencies.items()}}
            for r in args.resources]  # fmt: skip


def _stack(rule, config_keys: tuple[str, ...] = ()):
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        extra = [args.get_config()[key] for key in config_keys]
        for problem in rule(_stack_resources(args), *extra):
            if isinstance(problem, tuple):
                report_violation(problem[1], problem[0])
            else:
                report_violation(problem)

    return validate


def _gpu_types(props, allowed):
    types = [props.get("instanceType", "")] + rules.asg_instance_types(props)
    return rules.gpu_instance_types(types, allowed)


def _gpu_group(props, max_size):
    types = rules.asg_instance_types(props)
    return rules.gpu_group(props, max_size) if any(t[:1] in ("g", "p") for t in types) else []


def _schema(properties: dict, defaults: dict) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=properties, required=list(defaults))


# Both workload policies read the same exemption list (one schema, so they can't disagree).
EXEMPT_SCHEMA = _schema({"exempt": {"type": "array", "items": {"type": "string"}}}, {"exempt": EXEMPT_WORKLOADS})

POLICIES = [
    # -- security
    ResourceValidationPolicy(
        name="s3-public-access-blocked", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="S3 public access blocks turn on all four settings.",
        remediation_steps="Set blockPublicAcls, blockPublicPolicy, ignorePublicAcls and restrictPublicBuckets to true.",
        validate=_for_type(("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",), rules.public_access_block)),
    StackValidationPolicy(
        name="s3-buckets-blocked-and-encrypted", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="Every S3 bucket has a public access block and a default encryption configuration.",
        remediation_steps="Declare aws.s3.BucketPublicAccessBlock and BucketServerSideEncryptionConfiguration for it.",
        validate=_stack(rules.buckets_protected)),
    ResourceValidationPolicy(
        name="s3-no-public-principal", severity=Severity.CRITICAL, enforcement_level=MANDATORY,
        description="No bucket policy allows '*' principals without a condition.",
        remediation_steps="Name the principal (a service or role), or add a condition such as aws:SourceArn.",
        validate=_for_type(("aws:s3/bucketPolicy:BucketPolicy",), rules.bucket_policy_principals)),
    ResourceValidationPolicy(
        name="launch-templates-hardened", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="Launch templates require IMDSv2 and encrypt every EBS block device.",
        remediation_steps="metadataOptions.httpTokens = required; blockDeviceMappings[].ebs.encrypted = true.",
        validate=_for_type(("aws:ec2/launchTemplate:LaunchTemplate",), rules.launch_template_hardened)),
    ResourceValidationPolicy(
        name="ebs-encrypted", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="EBS volumes are encrypted.", remediation_steps="Set encrypted = true (and a KMS key).",
        validate=_for_type(("aws:ebs/volume:Volume",), rules.ebs_volume_encrypted)),
    ResourceValidationPolicy(
        name="no-open-admin-ports", severity=Severity.CRITICAL, enforcement_level=MANDATORY,
        description="No ingress from 0.0.0.0/0 or ::/0 to 22, 3389, 6443 or 2379; VRRP only between /32 addresses.",
        remediation_steps="Use SSM Session Manager instead of SSH; admit VRRP from the peer's own address only.",
        validate=[_for_type(("aws:ec2/securityGroup:SecurityGroup",), rules.security_group),
                  _for_type(("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",),
                            lambda props: rules.ingress_rules_safe([props])),
                  _for_type(("aws:ec2/securityGroupRule:SecurityGroupRule",),
                            lambda props: rules.ingress_rules_safe([props]) if props.get("type") == "ingress" else [])]),
    ResourceValidationPolicy(
        name="cloudfront-modern-tls", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="CloudFront uses TLSv1.2_2021 or newer and never serves plain HTTP.",
        remediation_steps="viewerCertificate.minimumProtocolVersion = TLSv1.2_2021; viewerProtocolPolicy redirect-to-https.",
        validate=_for_type(("aws:cloudfront/distribution:Distribution",), rules.cloudfront_tls)),
    ResourceValidationPolicy(
        name="ingress-tls13-waf", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="Ingresses terminate TLS: ALBs with a TLS 1.3 policy, HTTP redirected, WAF when internet-facing.",
        remediation_steps="Set inference.ingress.eks.sslPolicy to a TLS13 policy; keep the redirect and the web ACL.",
        validate=_for_type(("kubernetes:networking.k8s.io/v1:Ingress",), rules.ingress_tls)),
    ResourceValidationPolicy(
        name="eks-secrets-encrypted-private-endpoint", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="EKS encrypts secrets with KMS; the API endpoint is private in the configured environments.",
        remediation_steps="encryptionConfig for 'secrets'; vpcConfig.endpointPublicAccess = false (platform:eks).",
        config_schema=_schema({"privateEndpointIn": {"type": "array", "items": {"type": "string"}}},
                              {"privateEndpointIn": ["prod"]}),
        validate=_for_type(("aws:eks/cluster:Cluster",), rules.eks_cluster, ("privateEndpointIn",))),
    ResourceValidationPolicy(
        name="kms-rotation", severity=Severity.MEDIUM, enforcement_level=MANDATORY,
        description="Customer managed KMS keys rotate.", remediation_steps="enableKeyRotation = true.",
        validate=_for_type(("aws:kms/key:Key",), rules.kms_rotation)),
    ResourceValidationPolicy(
        name="vpn-ikev2-strong-proposals", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="VPN tunnels use IKEv2 only, AES-GCM/AES encryption, SHA-2 integrity and ECP DH groups 19-21 in both phases.",
        remediation_steps="Set tunnelN IKE versions and phase 1/2 encryption, integrity and DH group lists explicitly.",
        validate=_for_type(("aws:ec2/vpnConnection:VpnConnection",), rules.vpn_tunnels)),
    ResourceValidationPolicy(
        name="iam-no-admin-star", severity=Severity.CRITICAL, enforcement_level=MANDATORY,
        description="No IAM policy allows Action '*' on Resource '*'.",
        remediation_steps="List the actions and resources the principal needs.",
        validate=_for_type(("aws:iam/policy:Policy", "aws:iam/rolePolicy:RolePolicy", "aws:iam/userPolicy:UserPolicy",
                            "aws:iam/groupPolicy:GroupPolicy"), rules.iam_no_admin_star)),
    ResourceValidationPolicy(
        name="k8s-workloads-hardened", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="Kubernetes containers run non-root, set CPU and memory limits, and pin images by digest.",
        remediation_steps="securityContext.runAsNonRoot = true; resources.limits; image repo@sha256:<digest>.",
        config_schema=EXEMPT_SCHEMA,
        validate=_workload(exempt=False)),
    ResourceValidationPolicy(
        name="k8s-system-workloads", severity=Severity.LOW, enforcement_level=ADVISORY,
        description="The same checks for the exempted system daemons (accepted: see the README).",
        remediation_steps="Pin the image by digest when upstream publishes one you can verify.",
        config_schema=EXEMPT_SCHEMA,
        validate=_workload(exempt=True)),
    # -- cost
    ResourceValidationPolicy(
        name="cost-tags", severity=Severity.MEDIUM, enforcement_level=MANDATORY,
        description="Resources that take tags carry the cost allocation tags.",
        remediation_steps="Pass TagContext.tags(...) (components/tagging.py) to the resource.",
        validate=lambda args, report: [report(m) for m in rules.cost_tags(args.props)]
        if args.resource_type in rules.TAGGABLE_TYPES or (args.resource_type.startswith("aws:") and "tags" in args.props)
        else None),
    ResourceValidationPolicy(
        name="gpu-types-allowed", severity=Severity.MEDIUM, enforcement_level=MANDATORY,
        description="GPU instance types come from the allowed list (policy config).",
        remediation_steps="Use an allowed type, or add it to the pack's allowedGpuTypes after review.",
        config_schema=_schema({"allowedGpuTypes": {"type": "array", "items": {"type": "string"}}},
                              {"allowedGpuTypes": GPU_TYPES}),
        validate=_for_type(("aws:ec2/launchTemplate:LaunchTemplate", "aws:autoscaling/group:Group",
                            "aws:ec2/capacityReservation:CapacityReservation"), _gpu_types, ("allowedGpuTypes",))),
    ResourceValidationPolicy(
        name="gpu-groups-bounded-spot-is-spot", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="GPU Auto Scaling groups have a max size within the limit; the spot pool launches only spot.",
        remediation_steps="Set maxSize; for the spot pool onDemandBaseCapacity = 0 and percentage above base = 0.",
        config_schema=_schema({"maxGpuGroupSize": {"type": "integer"}}, {"maxGpuGroupSize": 50}),
        validate=_for_type(("aws:autoscaling/group:Group",), _gpu_group, ("maxGpuGroupSize",))),
    StackValidationPolicy(
        name="budget-per-stack", severity=Severity.MEDIUM, enforcement_level=MANDATORY,
        description="Every stack declares an AWS Budget.", remediation_steps="Set platform:cost.monthlyBudgetUsd.",
        validate=_stack(rules.budget_exists)),
    # -- reliability
    StackValidationPolicy(
        name="deployments-probed-and-budgeted", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="Deployments and Argo Rollouts have readiness and liveness probes and a PodDisruptionBudget.",
        remediation_steps="Add both probes; add a PodDisruptionBudget selecting the pods.",
        validate=_stack(rules.deployments_guarded)),
    StackValidationPolicy(
        name="ha-spans-zones", severity=Severity.HIGH, enforcement_level=MANDATORY,
        description="HA environments span at least two availability zones.",
        remediation_steps="List two or more platform:network.availabilityZones.",
        config_schema=_schema({"haEnvironments": {"type": "array", "items": {"type": "string"}}},
                              {"haEnvironments": ["staging", "prod"]}),
        validate=_stack(rules.multi_az, ("haEnvironments",))),
]  # fmt: skip

INITIAL_CONFIG = {
    "eks-secrets-encrypted-private-endpoint": {"privateEndpointIn": ["prod"]},
    "k8s-workloads-hardened": {"exempt": EXEMPT_WORKLOADS},
    "k8s-system-workloads": {"exempt": EXEMPT_WORKLOADS},
    "gpu-types-allowed": {"allowedGpuTypes": GPU_TYPES},
    "gpu-groups-bounded-spot-is-spot": {"maxGpuGroupSize": 50},
    "ha-spans-zones": {"haEnvironments": ["staging", "prod"]},
}

PolicyPack(name="platform-guardrails", enforcement_level=MANDATORY, policies=POLICIES, initial_config=INITIAL_CONFIG)

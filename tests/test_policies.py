"""The policy pack, run as the Pulumi CLI runs it (Analyzer gRPC), on every stack and per policy both ways."""

from __future__ import annotations

import dataclasses
import json

import pytest
import typer
import yaml

from platformctl.offline import Plan, PlannedResource, run_offline_plan
from platformctl.policy import ENGINE_UNKNOWN, check_plan, check_resources

from .conftest import ROOT, STACKS

PACK = ROOT / "policies"
ACCEPTED_ADVISORIES = {("k8s-system-workloads", "gpu-nvidia-device-plugin"),
                       ("k8s-system-workloads", "storage-shipper-daemonset"),
                       ("k8s-system-workloads", "storage-onprem-audit-daemonset")}  # README: "Accepted advisories"
TAGS = {"environment": "prod", "component": "c", "cost-center": "x", "owner": "o", "stack": "prod", "Name": "n"}


@pytest.fixture(scope="module")
def verdicts(plans, project):
    hybrid = run_offline_plan(dataclasses.replace(project, stack_config_dir=ROOT / "examples" / "stacks"), "hybrid")
    return {stack: check_plan(PACK, plan) for stack, plan in {**plans, "hybrid": hybrid}.items()}


@pytest.mark.parametrize("stack", [*STACKS, "hybrid"])
def test_every_stack_passes_with_no_mandatory_violation(verdicts, stack):
    mandatory = [v for v in verdicts[stack] if v.enforcement == "mandatory"]
    assert mandatory == [], "\n".join(f"{v.policy}: {v.urn}: {v.message}" for v in mandatory)


@pytest.mark.parametrize("stack", [*STACKS, "hybrid"])
def test_advisories_are_the_accepted_ones_or_previews_unknowns(verdicts, stack):
    for violation in verdicts[stack]:
        resource = violation.urn.rsplit("::", 1)[-1]
        if "can't be known during preview" in violation.message:
            continue  # checked at `pulumi up`, when the value exists
        assert (violation.policy, resource) in ACCEPTED_ADVISORIES, violation


def _one(type_token: str, inputs: dict, name: str = "r", **extra) -> dict:
    return {"type": type_token, "name": name, "urn": f"urn:pulumi:t::p::{type_token}::{name}", "inputs": inputs, **extra}


def _pod(containers: list[dict], non_root: bool = True) -> dict:
    return {"metadata": {"name": "app", "namespace": "ns"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"securityContext": {"runAsNonRoot": non_root}, "containers": containers}}}}  # fmt: skip


GOOD_CONTAINER = {"name": "c", "image": "r@sha256:" + "a" * 64, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                  "readinessProbe": {"httpGet": {"path": "/readyz"}}, "livenessProbe": {"httpGet": {"path": "/healthz"}}}  # fmt: skip
PAB = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True}
TUNNEL = {f"tunnel{n}{k}": v for n in (1, 2) for k, v in {
    "IkeVersions": ["ikev2"], "Phase1EncryptionAlgorithms": ["AES256-GCM-16"], "Phase2EncryptionAlgorithms": ["AES256-GCM-16"],
    "Phase1IntegrityAlgorithms": ["SHA2-256"], "Phase2IntegrityAlgorithms": ["SHA2-256"],
    "Phase1DhGroupNumbers": [20], "Phase2DhGroupNumbers": [19, 21]}.items()}  # fmt: skip
SPOT_ASG = {"maxSize": 4, "tags": [{"key": "k8s.io/cluster-autoscaler/node-template/label/capacity-type", "value": "spot",
                                    "propagateAtLaunch": True}],
            "mixedInstancesPolicy": {"instancesDistribution": {"onDemandBaseCapacity": 0,
                                                               "onDemandPercentageAboveBaseCapacity": 0},
                                     "launchTemplate": {"overrides": [{"instanceType": "g6.xlarge"}]}}}  # fmt: skip
LT = {"metadataOptions": {"httpTokens": "required"}, "blockDeviceMappings": [{"deviceName": "/dev/xvda",
                                                                             "ebs": {"encrypted": "true"}}]}  # fmt: skip


def _policy(doc: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [doc]})


# (policy, compliant resource, violating resource): each policy proven both ways.
CASES = [
    ("s3-public-access-blocked", _one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", PAB),
     _one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", {**PAB, "restrictPublicBuckets": False})),
    ("s3-no-public-principal",
     _one("aws:s3/bucketPolicy:BucketPolicy", {"policy": _policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
          "Resource": "*", "Condition": {"StringEquals": {"AWS:SourceArn": "x"}}})}),
     _one("aws:s3/bucketPolicy:BucketPolicy", {"policy": _policy({"Effect": "Allow", "Principal": {"AWS": "*"},
          "Action": "s3:GetObject", "Resource": "*"})})),
    ("launch-templates-hardened", _one("aws:ec2/launchTemplate:LaunchTemplate", LT),
     _one("aws:ec2/launchTemplate:LaunchTemplate", {**LT, "metadataOptions": {"httpTokens": "optional"}})),
    ("ebs-encrypted", _one("aws:ebs/volume:Volume", {"encrypted": True}), _one("aws:ebs/volume:Volume", {"encrypted": False})),
    ("no-open-admin-ports",
     _one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
          {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidrIpv4": "0.0.0.0/0"}),
     _one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
          {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": "0.0.0.0/0"})),
    ("no-open-admin-ports",
     _one("aws:ec2/securityGroup:SecurityGroup", {"ingress": [{"protocol": "112", "cidrBlocks": ["10.0.1.5/32"]}]}),
     _one("aws:ec2/securityGroup:SecurityGroup", {"ingress": [{"protocol": "112", "cidrBlocks": ["10.0.0.0/16"]}]})),
    ("cloudfront-modern-tls",
     _one("aws:cloudfront/distribution:Distribution", {"viewerCertificate": {"minimumProtocolVersion": "TLSv1.2_2021"},
          "defaultCacheBehavior": {"viewerProtocolPolicy": "redirect-to-https"}}),
     _one("aws:cloudfront/distribution:Distribution", {"viewerCertificate": {"minimumProtocolVersion": "TLSv1"},
          "defaultCacheBehavior": {"viewerProtocolPolicy": "allow-all"}})),
    ("ingress-tls13-waf",
     _one("kubernetes:networking.k8s.io/v1:Ingress", {"spec": {"ingressClassName": "alb"}, "metadata": {"annotations": {
          "alb.ingress.kubernetes.io/ssl-policy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
          "alb.ingress.kubernetes.io/ssl-redirect": "443", "alb.ingress.kubernetes.io/scheme": "internet-facing",
          "alb.ingress.kubernetes.io/wafv2-acl-arn": "arn:aws:wafv2:us-east-1:1:regional/webacl/x/y"}}}),
     _one("kubernetes:networking.k8s.io/v1:Ingress", {"spec": {"ingressClassName": "alb"}, "metadata": {"annotations": {
          "alb.ingress.kubernetes.io/ssl-policy": "ELBSecurityPolicy-2016-08",
          "alb.ingress.kubernetes.io/scheme": "internet-facing"}}})),
    ("ingress-tls13-waf",
     _one("kubernetes:networking.k8s.io/v1:Ingress", {"spec": {"ingressClassName": "nginx", "tls": [{"secretName": "t"}]}}),
     _one("kubernetes:networking.k8s.io/v1:Ingress", {"spec": {"ingressClassName": "nginx"}})),
    ("eks-secrets-encrypted-private-endpoint",
     _one("aws:eks/cluster:Cluster", {"encryptionConfig": {"resources": ["secrets"]}, "tags": TAGS,
          "vpcConfig": {"endpointPublicAccess": False}}),
     _one("aws:eks/cluster:Cluster", {"encryptionConfig": {"resources": ["secrets"]}, "tags": TAGS,
          "vpcConfig": {"endpointPublicAccess": True}})),
    ("kms-rotation", _one("aws:kms/key:Key", {"enableKeyRotation": True}), _one("aws:kms/key:Key", {})),
    ("vpn-ikev2-strong-proposals", _one("aws:ec2/vpnConnection:VpnConnection", TUNNEL),
     _one("aws:ec2/vpnConnection:VpnConnection", {**TUNNEL, "tunnel2IkeVersions": ["ikev1", "ikev2"]})),
    ("vpn-ikev2-strong-proposals", _one("aws:ec2/vpnConnection:VpnConnection", TUNNEL),
     _one("aws:ec2/vpnConnection:VpnConnection", {**TUNNEL, "tunnel1Phase2DhGroupNumbers": [14, 19]})),
    ("iam-no-admin-star",
     _one("aws:iam/rolePolicy:RolePolicy", {"policy": _policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})}),
     _one("aws:iam/rolePolicy:RolePolicy", {"policy": _policy({"Effect": "Allow", "Action": "*", "Resource": "*"})})),
    ("k8s-workloads-hardened", _one("kubernetes:apps/v1:Deployment", _pod([GOOD_CONTAINER])),
     _one("kubernetes:apps/v1:Deployment", _pod([{**GOOD_CONTAINER, "image": "nginx:1.27"}]))),
    ("k8s-workloads-hardened", _one("kubernetes:argoproj.io/v1alpha1:Rollout", _pod([GOOD_CONTAINER])),
     _one("kubernetes:argoproj.io/v1alpha1:Rollout", _pod([GOOD_CONTAINER], non_root=False))),
    ("k8s-workloads-hardened", _one("kubernetes:batch/v1:CronJob", {"metadata": {"name": "j", "namespace": "ns"},
          "spec": {"jobTemplate": _pod([GOOD_CONTAINER])}}),
     _one("kubernetes:batch/v1:CronJob", {"metadata": {"name": "j", "namespace": "ns"},
          "spec": {"jobTemplate": _pod([GOOD_CONTAINER], non_root=False)}})),
    ("k8s-system-workloads",
     _one("kubernetes:apps/v1:DaemonSet", {**_pod([GOOD_CONTAINER]), "metadata": {"name": "nvidia-device-plugin",
          "namespace": "kube-system"}}),
     _one("kubernetes:apps/v1:DaemonSet", {**_pod([{**GOOD_CONTAINER, "resources": {}}]),
          "metadata": {"name": "nvidia-device-plugin", "namespace": "kube-system"}})),
    ("cost-tags", _one("aws:ec2/vpc:Vpc", {"tags": TAGS}), _one("aws:ec2/vpc:Vpc", {"tags": {"Name": "x"}})),
    ("cost-tags", _one("aws:ec2/natGateway:NatGateway", {"tags": TAGS}), _one("aws:ec2/natGateway:NatGateway", {})),
    ("gpu-types-allowed", _one("aws:ec2/capacityReservation:CapacityReservation", {"instanceType": "g6.xlarge"}),
     _one("aws:ec2/capacityReservation:CapacityReservation", {"instanceType": "p5.48xlarge"})),
    ("gpu-groups-bounded-spot-is-spot", _one("aws:autoscaling/group:Group", SPOT_ASG),
     _one("aws:autoscaling/group:Group", {**SPOT_ASG, "mixedInstancesPolicy": {**SPOT_ASG["mixedInstancesPolicy"],
          "instancesDistribution": {"onDemandBaseCapacity": 1, "onDemandPercentageAboveBaseCapacity": 0}}})),
    ("gpu-groups-bounded-spot-is-spot", _one("aws:autoscaling/group:Group", SPOT_ASG),
     _one("aws:autoscaling/group:Group", {**SPOT_ASG, "maxSize": 500})),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "compliant", "violating"), CASES, ids=[c[0] for c in CASES])
def test_each_resource_policy_passes_a_compliant_resource_and_fails_a_violating_one(policy, compliant, violating):
    assert [v for v in check_resources(PACK, [compliant]) if v.policy == policy] == []
    found = [v for v in check_resources(PACK, [violating]) if v.policy == policy]
    assert found and found[0].urn == violating["urn"], f"{policy} did not catch {violating['inputs']}"


def _bucket_with(guards: tuple[str, ...]) -> list[dict]:
    bucket = _one("aws:s3/bucket:Bucket", {"tags": TAGS}, name="b")
    kinds = {"pab": ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", PAB),
             "sse": ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", {})}  # fmt: skip
    return [bucket, *[_one(kinds[g][0], {**kinds[g][1], "bucket": ENGINE_UNKNOWN}, name=f"b-{g}",
                           dependencies={"bucket": [bucket["urn"]]}) for g in guards]]  # fmt: skip


def _deployment_with_pdb(with_pdb: bool, probes: bool = True, kind: str = "kubernetes:apps/v1:Deployment") -> list[dict]:
    container = GOOD_CONTAINER if probes else {k: v for k, v in GOOD_CONTAINER.items() if k != "livenessProbe"}
    out = [_one(kind, _pod([container]), name="app")]
    if with_pdb:
        out.append(_one("kubernetes:policy/v1:PodDisruptionBudget", {"metadata": {"name": "app", "namespace": "ns"},
                                                                     "spec": {"selector": {"matchLabels": {"a": "b"}}}},
                        name="app-pdb"))  # fmt: skip
    return out


STACK_CASES = [
    ("s3-buckets-blocked-and-encrypted", _bucket_with(("pab", "sse")), _bucket_with(("pab",))),
    ("budget-per-stack", [_one("aws:budgets/budget:Budget", {"budgetType": "COST"})], [_one("aws:ec2/vpc:Vpc", {"tags": TAGS})]),
    ("deployments-probed-and-budgeted", _deployment_with_pdb(True), _deployment_with_pdb(False)),
    ("deployments-probed-and-budgeted", _deployment_with_pdb(True), _deployment_with_pdb(True, probes=False)),
    ("deployments-probed-and-budgeted", _deployment_with_pdb(True, kind="kubernetes:argoproj.io/v1alpha1:Rollout"),
     _deployment_with_pdb(False, kind="kubernetes:argoproj.io/v1alpha1:Rollout")),
    ("ha-spans-zones",
     [_one("aws:ec2/subnet:Subnet", {"availabilityZone": z, "tags": TAGS}, name=z) for z in ("a", "b")],
     [_one("aws:ec2/subnet:Subnet", {"availabilityZone": "a", "tags": TAGS}, name=n) for n in ("x", "y")]),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "compliant", "violating"), STACK_CASES, ids=[c[0] for c in STACK_CASES])
def test_each_stack_policy_passes_a_compliant_stack_and_fails_a_violating_one(policy, compliant, violating):
    assert [v for v in check_resources(PACK, compliant) if v.policy == policy] == []
    assert [v for v in check_resources(PACK, violating) if v.policy == policy], f"{policy} did not catch the stack"


def test_every_policy_in_the_pack_is_proven_both_ways():
    from platformctl.policy import PolicyPackProcess

    with PolicyPackProcess(PACK) as pack:
        names = set(pack.configure())
    assert names == {c[0] for c in CASES} | {c[0] for c in STACK_CASES}


def test_a_mandatory_violation_makes_the_plan_command_fail():
    from platformctl.cli import _enforce_policies
    from platformctl.common import EXIT_POLICY

    bad = PlannedResource(urn="urn:pulumi:prod::p::aws:kms/key:Key::k", type="aws:kms/key:Key", name="k", parent=None,
                          provider=None, custom=True, inputs={"enableKeyRotation": False}, dependencies={})  # fmt: skip
    plan = Plan(project="p", stack="prod", stack_file="s", resources=[bad], stack_outputs={})
    with pytest.raises(typer.Exit) as exited:
        _enforce_policies(PACK, plan, "prod")
    assert exited.value.exit_code == EXIT_POLICY


def test_the_pack_is_a_python_pulumi_policy_pack_and_ci_passes_it_to_previews():
    manifest = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "preview.yml").read_text())
    step = next(s for s in workflow["jobs"]["preview"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions"))
    assert step["with"]["policyPacks"] == "policies"


def test_the_packs_taggable_list_matches_the_sdk_for_every_type_the_stacks_use(plans, project):
    """The pack runs without pulumi-aws, so it carries the list; the SDK keeps it exact here."""
    import sys

    sys.path.insert(0, str(PACK))
    try:
        import rules
    finally:
        sys.path.remove(str(PACK))
    from .test_plan import _taggable

    hybrid = run_offline_plan(dataclasses.replace(project, stack_config_dir=ROOT / "examples" / "stacks"), "hybrid")
    used = {r.type for plan in [*plans.values(), hybrid] for r in plan.resources if r.custom and r.type.startswith("aws:")}
    assert {t for t in used if _taggable(t)} == rules.TAGGABLE_TYPES

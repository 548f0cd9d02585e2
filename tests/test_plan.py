"""Each stack's offline plan: completeness, relationships, providers, tags."""

from __future__ import annotations

import ast
import importlib
import inspect
import keyword
from pathlib import Path

import pytest

from components.tagging import STANDARD_TAG_KEYS
from platformctl.offline import UNKNOWN, Plan

from .conftest import ROOT, STACKS

EXPECTED_AZS = {"dev": 2, "staging": 3, "prod": 3}
EXPECTED_NATS = {"dev": 1, "staging": 3, "prod": 3}


def test_every_stack_is_planned(plans):
    assert set(plans) == {"dev", "staging", "prod"}
    for stack, plan in plans.items():
        assert plan.stack == stack
        assert plan.of_type("platform:network:Network"), stack


@pytest.mark.parametrize("stack", STACKS)
def test_subnets_cover_every_az_in_both_tiers(plans, stack):
    plan = plans[stack]
    subnets = plan.of_type("aws:ec2/subnet:Subnet")
    assert len(subnets) == 2 * EXPECTED_AZS[stack]
    tiers = {(s.inputs["tags"]["tier"], s.inputs["availabilityZone"]) for s in subnets}
    assert len(tiers) == len(subnets)
    for subnet in subnets:
        assert subnet.inputs["mapPublicIpOnLaunch"] is False
        # vpcId is unknown until the VPC exists, but it must come from the planned VPC.
        assert subnet.inputs["vpcId"] == UNKNOWN
        assert subnet.dependencies["vpcId"] == [plan.named("network-vpc").urn]


@pytest.mark.parametrize("stack", STACKS)
def test_nat_gateways_follow_ha(plans, stack):
    plan = plans[stack]
    nats = plan.of_type("aws:ec2/natGateway:NatGateway")
    assert len(nats) == EXPECTED_NATS[stack]
    public_subnets = {s.urn for s in plan.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["tier"] == "public"}
    for nat in nats:
        assert set(nat.dependencies["subnetId"]) <= public_subnets


@pytest.mark.parametrize("stack", STACKS)
def test_each_private_route_table_defaults_to_a_nat_gateway(plans, stack):
    plan = plans[stack]
    nat_urns = {n.urn for n in plan.of_type("aws:ec2/natGateway:NatGateway")}
    private_routes = [r for r in plan.of_type("aws:ec2/route:Route") if "natGatewayId" in r.inputs]
    assert len(private_routes) == EXPECTED_AZS[stack]
    used = set()
    for route in private_routes:
        assert route.inputs["destinationCidrBlock"] == "0.0.0.0/0"
        [nat] = route.dependencies["natGatewayId"]
        assert nat in nat_urns
        used.add(nat)
        if EXPECTED_NATS[stack] > 1:
            # per-AZ NAT: the route of AZ x uses the NAT of AZ x (no cross-AZ egress)
            az = route.name.removeprefix("network-private-").removesuffix("-default")
            assert nat.endswith(f"network-nat-{az}")
    assert used == nat_urns


@pytest.mark.parametrize("stack", STACKS)
def test_vpc_endpoints(plans, stack):
    plan = plans[stack]
    endpoints = {e.inputs["serviceName"]: e for e in plan.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert endpoints["com.amazonaws.us-east-1.s3"].inputs["vpcEndpointType"] == "Gateway"
    assert len(endpoints["com.amazonaws.us-east-1.s3"].dependencies["routeTableIds"]) == EXPECTED_AZS[stack]
    for service in ("ecr.api", "ecr.dkr"):
        endpoint = endpoints[f"com.amazonaws.us-east-1.{service}"]
        assert endpoint.inputs["vpcEndpointType"] == "Interface"
        assert endpoint.inputs["privateDnsEnabled"] is True
        assert len(endpoint.inputs["subnetIds"]) == EXPECTED_AZS[stack]


def test_prod_adds_the_endpoints_its_config_lists(plans):
    services = {e.inputs["serviceName"] for e in plans["prod"].of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert {"com.amazonaws.us-east-1.sts", "com.amazonaws.us-east-1.logs"} <= services
    dev_services = {e.inputs["serviceName"] for e in plans["dev"].of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert "com.amazonaws.us-east-1.sts" not in dev_services


@pytest.mark.parametrize("stack", STACKS)
def test_flow_logs_go_to_a_log_group_with_the_configured_retention(plans, stack):
    plan = plans[stack]
    [log_group] = [g for g in plan.of_type("aws:cloudwatch/logGroup:LogGroup") if g.name == "network-flow-logs"]
    assert log_group.inputs["retentionInDays"] == {"dev": 14, "staging": 30, "prod": 365}[stack]
    [flow_log] = plan.of_type("aws:ec2/flowLog:FlowLog")
    assert flow_log.inputs["trafficType"] == "ALL"
    assert flow_log.dependencies["logDestination"] == [log_group.urn]
    assert flow_log.dependencies["vpcId"] == [plan.named("network-vpc").urn]


@pytest.mark.parametrize("stack", STACKS)
def test_endpoint_security_group_admits_only_https_from_the_vpc(plans, stack):
    plan = plans[stack]
    [rule] = [r for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
              if r.name.startswith("network-")]  # fmt: skip
    assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (443, 443, "tcp")
    assert rule.inputs["cidrIpv4"] == plan.named("network-vpc").inputs["cidrBlock"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_aws_resource_uses_the_explicit_provider_and_a_component_parent(plans, stack):
    plan = plans[stack]
    [provider] = plan.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    components = {r.urn for r in plan.resources if not r.custom}
    for resource in plan.resources:
        if resource.type.startswith("aws:"):
            assert resource.provider == provider.urn, resource.urn
            assert resource.parent in components, resource.urn
            assert resource.name.startswith(plan.component_of(resource).name + "-"), resource.name


def _taggable(type_token: str) -> bool:
    """Whether the pulumi-aws resource class for ``type_token`` accepts ``tags``."""
    package, module_path, _ = type_token.split(":")
    module_name, class_name = module_path.split("/")[0], type_token.split(":")[2]
    if keyword.iskeyword(module_name):  # `lambda` is `pulumi_aws.lambda_` in Python
        module_name += "_"
    module = importlib.import_module(f"pulumi_{package}.{module_name}" if module_name != "index" else f"pulumi_{package}")
    cls = getattr(module, class_name)
    return "tags" in inspect.signature(cls._internal_init).parameters


def test_taggable_detection_is_right_both_ways():
    assert _taggable("aws:ec2/vpc:Vpc")
    assert not _taggable("aws:ec2/route:Route")
    assert not _taggable("aws:iam/rolePolicy:RolePolicy")
    assert _taggable("aws:lambda/function:Function")


@pytest.mark.parametrize("stack", STACKS)
def test_every_taggable_resource_carries_the_standard_tags(plans, stack):
    plan: Plan = plans[stack]
    checked = 0
    for resource in plan.resources:
        if not resource.type.startswith("aws:") or not _taggable(resource.type):
            continue
        tags = resource.inputs.get("tags") or {}
        if isinstance(tags, list):  # Auto Scaling groups take [{key, value, propagateAtLaunch}]
            assert all(t["propagateAtLaunch"] for t in tags), resource.urn
            tags = {t["key"]: t["value"] for t in tags}
        missing = [key for key in STANDARD_TAG_KEYS if not tags.get(key)]
        assert not missing, f"{resource.urn} lacks tags {missing}"
        assert tags["environment"] == stack
        assert tags["stack"] == stack
        assert tags["component"] == plan.component_of(resource).name
        assert tags["Name"].startswith(f"platform-{stack}-")
        checked += 1
    assert checked >= 20  # the walk really saw the stack's resources


def test_prod_extra_tags_reach_resources(plans):
    vpc = plans["prod"].named("network-vpc")
    assert vpc.inputs["tags"]["data-classification"] == "internal"
    assert vpc.inputs["tags"]["cost-center"] == "ml-platform-prod"


def test_stack_exports(plans):
    outputs = plans["dev"].stack_outputs
    assert set(outputs) == {
        "vpcId", "privateSubnetIds", "publicSubnetIds", "clusterName", "gpuEventsTopicArn", "gpuScheduling",
        "inferenceImage", "modelDeployments", "costLedgerBucket", "alertTopicArns", "sessionStore",
        "vpn", "vpnPreSharedKeys", "storage", "modelEndpoints",
    }
    assert outputs["modelDeployments"] == {"eks": {"demo": "inference/demo"}}
    assert outputs["modelEndpoints"] == {"demo": "https://demo.inference.dev.platform.example.com"}
    assert outputs["inferenceImage"]["version"] == (ROOT / "inference_image" / "VERSION").read_text().strip()


def test_no_code_branches_on_the_stack_name():
    """Environments differ by config only: no comparison may involve get_stack()."""
    offenders = []
    for path in [ROOT / "__main__.py", *(ROOT / "components").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                text = ast.unparse(node)
                if "get_stack" in text or "environment ==" in text or ".environment in" in text:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text}")
    assert not offenders, offenders


def test_main_only_composes():
    source = (ROOT / "__main__.py").read_text()
    assert len(source.splitlines()) < 150  # composition of eleven components, no decisions
    tree = ast.parse(source)
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While))]
    # config is loaded before the first resource is declared
    first_resource = source.index("aws.Provider(")
    assert source.index("load_platform_config()") < first_resource


def test_plan_reads_the_real_program(project):
    assert project.main == Path(ROOT / "__main__.py")

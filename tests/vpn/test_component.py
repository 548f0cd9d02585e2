"""The VPN in every stack's offline plan (Pulumi's mock monitor running __main__.py)."""

from __future__ import annotations

import dataclasses

import pytest

from components.inference.manifests import SERVER_PORT
from components.vpn.alarms import tunnel_alarms
from components.vpn.tunnels import inside_addresses
from platformctl.common import load_stack_config
from platformctl.offline import run_offline_plan

from ..conftest import ROOT, STACKS

EXAMPLES = ROOT / "examples" / "stacks"
TARGETS = [*STACKS, "hybrid"]


@pytest.fixture(scope="module")
def every_plan(plans, project):
    hybrid = run_offline_plan(dataclasses.replace(project, stack_config_dir=EXAMPLES), "hybrid")
    return {**plans, "hybrid": hybrid}


def _config(stack):
    return load_stack_config(stack, ROOT, EXAMPLES if stack == "hybrid" else None)


def _vpn(plan, type_token):
    return {r.name: r for r in plan.of_type(type_token) if r.name.startswith("vpn-")}


@pytest.mark.parametrize("stack", TARGETS)
def test_both_tunnels_carry_every_option_of_the_stack_config(every_plan, stack):
    plan, config = every_plan[stack], _config(stack)
    vpn, ike = config.vpn, config.vpn.ike
    [connection] = _vpn(plan, "aws:ec2/vpnConnection:VpnConnection").values()
    inputs = connection.inputs
    assert inputs["type"] == "ipsec.1" and inputs["staticRoutesOnly"] is (vpn.routing == "static")
    assert inputs["tunnelInsideIpVersion"] == "ipv4" and "vpnGatewayId" not in inputs
    expected = {
        "IkeVersions": ["ikev2"],
        "Phase1EncryptionAlgorithms": ike.phase1_encryption, "Phase1IntegrityAlgorithms": ike.phase1_integrity,
        "Phase1DhGroupNumbers": ike.phase1_dh_groups, "Phase1LifetimeSeconds": ike.phase1_lifetime_seconds,
        "Phase2EncryptionAlgorithms": ike.phase2_encryption, "Phase2IntegrityAlgorithms": ike.phase2_integrity,
        "Phase2DhGroupNumbers": ike.phase2_dh_groups, "Phase2LifetimeSeconds": ike.phase2_lifetime_seconds,
        "RekeyMarginTimeSeconds": ike.rekey_margin_seconds, "RekeyFuzzPercentage": ike.rekey_fuzz_percentage,
        "ReplayWindowSize": ike.replay_window_size, "DpdTimeoutSeconds": ike.dpd_timeout_seconds,
        "DpdTimeoutAction": ike.dpd_timeout_action, "StartupAction": ike.startup_action,
        "EnableTunnelLifecycleControl": True,
    }  # fmt: skip
    for number, tunnel in enumerate(vpn.tunnels, start=1):
        prefix = f"tunnel{number}"
        assert {key: inputs[prefix + key] for key in expected} == expected
        assert inputs[f"{prefix}InsideCidr"] == str(tunnel.inside_cidr)
        assert inputs[f"{prefix}PresharedKey"] == "[secret]"  # never in the plan, never in plaintext state
        logs = inputs[f"{prefix}LogOptions"]["cloudwatchLogOptions"]
        assert logs["logEnabled"] is True and logs["logOutputFormat"] == "json"
        assert logs.get("bgpLogEnabled", False) is (vpn.routing == "bgp")
        deps = connection.dependencies[f"{prefix}PresharedKey"]
        if tunnel.pre_shared_key is None:  # generated, kept in state as a secret
            assert deps == [f"{plan.resources[0].urn.split('::')[0]}::{plan.project}::platform:vpn:SiteToSite"
                            f"$random:index/randomPassword:RandomPassword::vpn-{prefix}-psk"]  # fmt: skip
    [gateway] = _vpn(plan, "aws:ec2/customerGateway:CustomerGateway").values()
    assert gateway.inputs["ipAddress"] == str(vpn.customer_gateway.ip_address)
    assert gateway.inputs["bgpAsn"] == str(vpn.customer_gateway.bgp_asn) and gateway.inputs["type"] == "ipsec.1"
    [logs] = _vpn(plan, "aws:cloudwatch/logGroup:LogGroup").values()
    assert logs.inputs["retentionInDays"] == vpn.log_retention_days
    tunnels = plan.stack_outputs["vpn"]["tunnels"]
    assert [(t["insideCidr"], t["awsInsideAddress"], t["customerInsideAddress"]) for t in tunnels] == [
        (str(t.inside_cidr), str(inside_addresses(t.inside_cidr).aws.ip), str(inside_addresses(t.inside_cidr).customer.ip))
        for t in vpn.tunnels]  # fmt: skip
    assert plan.stack_outputs["vpnPreSharedKeys"] == "[secret]"


@pytest.mark.parametrize("stack", TARGETS)
def test_the_transit_gateway_routes_only_the_private_cloud_to_the_vpn(every_plan, stack):
    plan, config = every_plan[stack], _config(stack)
    [tgw] = _vpn(plan, "aws:ec2transitgateway/transitGateway:TransitGateway").values()
    assert tgw.inputs["amazonSideAsn"] == config.vpn.amazon_side_asn
    assert (tgw.inputs["defaultRouteTableAssociation"], tgw.inputs["defaultRouteTablePropagation"]) == ("disable", "disable")
    assert tgw.inputs["autoAcceptSharedAttachments"] == "disable"
    [attachment] = _vpn(plan, "aws:ec2transitgateway/vpcAttachment:VpcAttachment").values()
    assert len(attachment.inputs["subnetIds"]) == len(config.network.availability_zones)  # one private subnet per AZ
    associations = _vpn(plan, "aws:ec2transitgateway/routeTableAssociation:RouteTableAssociation")
    propagations = _vpn(plan, "aws:ec2transitgateway/routeTablePropagation:RouteTablePropagation")
    assert set(associations) == set(propagations) == {"vpn-vpc", "vpn-vpn"}
    static = _vpn(plan, "aws:ec2transitgateway/route:Route")
    if config.vpn.routing == "static":
        assert sorted(r.inputs["destinationCidrBlock"] for r in static.values()) == sorted(map(str, config.vpn.on_prem_cidrs))
    else:
        assert not static  # BGP propagates the private cloud's routes
    [prefix_list] = _vpn(plan, "aws:ec2/managedPrefixList:ManagedPrefixList").values()
    assert [e["cidr"] for e in prefix_list.inputs["entries"]] == [str(c) for c in config.vpn.on_prem_cidrs]
    assert prefix_list.inputs["maxEntries"] == len(config.vpn.on_prem_cidrs)
    routes = _vpn(plan, "aws:ec2/route:Route")
    assert len(routes) == len(config.network.availability_zones)  # every private route table
    for route in routes.values():
        assert set(route.dependencies) >= {"routeTableId", "destinationPrefixListId", "transitGatewayId"}
        assert "destinationCidrBlock" not in route.inputs
        assert any(urn.endswith("VpcAttachment::vpn-vpc") for urn in route.depends_on)


@pytest.mark.parametrize("stack", TARGETS)
def test_the_private_cloud_reaches_only_what_access_allows(every_plan, stack):
    plan, config = every_plan[stack], _config(stack)
    rules = {name: r for name, r in _vpn(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").items()
             if name.startswith("vpn-in-")}  # fmt: skip
    assert set(rules) == {f"vpn-in-{target}" for target in config.vpn.access}
    ports = {"vpn-in-inference": SERVER_PORT, "vpn-in-awsEndpoints": 443}
    groups = {"vpn-in-inference": "eks-cluster", "vpn-in-awsEndpoints": "network-endpoints"}
    for name, rule in rules.items():
        assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", ports[name], ports[name])
        assert "cidrIpv4" not in rule.inputs and rule.dependencies["prefixListId"][0].endswith("ManagedPrefixList::vpn-onprem")
        assert any(groups[name] in urn for urn in rule.dependencies["securityGroupId"])


@pytest.mark.parametrize("stack", TARGETS)
def test_tunnel_alarms_go_to_the_alerting_topic(every_plan, stack):
    plan = every_plan[stack]
    alarms = _vpn(plan, "aws:cloudwatch/metricAlarm:MetricAlarm")
    specs = {f"vpn-{spec.name}": spec for spec in tunnel_alarms()}
    assert set(alarms) == set(specs)
    for name, alarm in alarms.items():
        spec, inputs = specs[name], alarm.inputs
        assert inputs["tags"]["severity"] == spec.severity and inputs["alarmDescription"].startswith(f"[{spec.severity}]")
        assert (inputs["comparisonOperator"], inputs["threshold"]) == ("LessThanThreshold", 1)
        assert inputs["evaluationPeriods"] == inputs["datapointsToAlarm"] == spec.evaluation_periods
        assert inputs["treatMissingData"] == "breaching"
        metrics = [q["metric"] for q in inputs["metricQueries"] if "metric" in q]
        assert [(m["namespace"], m["metricName"], m["stat"], sorted(m["dimensions"])) for m in metrics] == [
            ("AWS/VPN", "TunnelState", "Maximum", ["TunnelIpAddress", "VpnId"])] * len(spec.tunnels)  # fmt: skip
        for key in ("metricQueries", "alarmActions", "okActions"):
            deps = alarm.dependencies[key]
            if key == "metricQueries":
                assert any(urn.endswith("VpnConnection::vpn-connection") for urn in deps)
            else:
                topic = "alerting-page" if spec.severity == "critical" else "alerting-ticket"
                assert deps == [next(r.urn for r in plan.of_type("aws:sns/topic:Topic") if r.name == topic)]
    assert specs["vpn-both-tunnels-down"].severity == "critical" and specs["vpn-both-tunnels-down"].tunnels == (1, 2)


@pytest.mark.parametrize("stack", TARGETS)
def test_hybrid_dns_endpoints_only_where_configured(every_plan, stack):
    plan, config = every_plan[stack], _config(stack)
    endpoints = _vpn(plan, "aws:route53/resolverEndpoint:ResolverEndpoint")
    dns = config.vpn.dns
    if dns is None:
        assert not endpoints and not _vpn(plan, "aws:ec2/securityGroup:SecurityGroup")
        return
    expected = ({"vpn-inbound"} if dns.inbound else set()) | ({"vpn-outbound"} if dns.forward_domains else set())
    assert set(endpoints) == expected
    for endpoint in endpoints.values():
        assert len(endpoint.inputs["ipAddresses"]) == len(config.network.availability_zones)  # one per AZ, at least 2
    rules = _vpn(plan, "aws:route53/resolverRule:ResolverRule")
    assert sorted(r.inputs["domainName"] for r in rules.values()) == sorted(dns.forward_domains)
    for rule in rules.values():
        assert rule.inputs["ruleType"] == "FORWARD"
        assert [t["ip"] for t in rule.inputs["targetIps"]] == [str(ip) for ip in dns.on_prem_resolvers]
    egress = _vpn(plan, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert sorted(r.inputs["cidrIpv4"] for r in egress.values()) == sorted(
        f"{ip}/32" for ip in dns.on_prem_resolvers for _ in ("udp", "tcp"))  # fmt: skip
    assert all(r.inputs["fromPort"] == r.inputs["toPort"] == 53 for r in egress.values())


@pytest.mark.parametrize("stack", TARGETS)
def test_every_vpn_resource_is_a_child_of_the_component_with_the_stack_provider(every_plan, stack):
    plan = every_plan[stack]
    [component] = [r for r in plan.resources if r.type == "platform:vpn:SiteToSite"]
    children = [r for r in plan.resources if r.name.startswith("vpn-") and r.custom]
    assert children and all(r.parent == component.urn for r in children)
    for resource in children:
        if resource.type.startswith("aws:"):
            assert resource.provider == f"urn:pulumi:{stack}::{plan.project}::pulumi:providers:aws::aws"
            if "tags" in resource.inputs:
                assert resource.inputs["tags"]["component"] == "vpn"

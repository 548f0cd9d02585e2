"""The failover pair in every stack's offline plan (Pulumi's mock monitor running __main__.py)."""

from __future__ import annotations

import dataclasses

import pytest

from components.failover.render import aws_layout
from platformctl.common import load_stack_config
from platformctl.offline import run_offline_plan

from ..conftest import ROOT, STACKS

EXAMPLES = ROOT / "examples" / "stacks"


@pytest.fixture(scope="module")
def hybrid(project):
    return run_offline_plan(dataclasses.replace(project, stack_config_dir=EXAMPLES), "hybrid")


def _failover(plan, type_token):
    return {r.name: r for r in plan.of_type(type_token) if r.name.startswith("failover-")}


@pytest.mark.parametrize("stack", STACKS)
def test_two_hardened_nodes_at_the_addresses_the_configs_were_rendered_for(plans, stack):
    plan = plans[stack]
    [pair] = [r for r in plan.resources if r.type == "platform:failover:Pair"]
    config = load_stack_config(stack, ROOT)
    layout = aws_layout(config.failover, config.network)
    enis = _failover(plan, "aws:ec2/networkInterface:NetworkInterface")
    assert {name: r.inputs["privateIps"] for name, r in enis.items()} == {
        f"failover-{node}": [str(layout.addresses[node])] for node in "ab"}  # fmt: skip
    templates = _failover(plan, "aws:ec2/launchTemplate:LaunchTemplate")
    assert len(templates) == 2 and len(_failover(plan, "aws:ec2/instance:Instance")) == 2
    for template in templates.values():
        inputs = template.inputs
        assert inputs["metadataOptions"]["httpTokens"] == "required"
        assert inputs["metadataOptions"]["httpPutResponseHopLimit"] == 1
        [disk] = inputs["blockDeviceMappings"]
        assert disk["ebs"]["encrypted"] == "true" and disk["ebs"]["volumeType"] == "gp3"
        assert inputs["instanceType"] == config.failover.instance_type
        assert inputs["imageId"] == config.failover.ami
        assert "keyName" not in inputs  # no SSH keys: SSM Session Manager only
    attachments = _failover(plan, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert sorted(r.inputs["policyArn"].rsplit("/", 1)[1] for r in attachments.values()) == [
        "AmazonSSMManagedInstanceCore"] * 2  # fmt: skip
    assert len(_failover(plan, "aws:iam/role:Role")) == 2  # one role per node: each may take the VIP only for itself
    for resource in plan.resources:
        if resource.name.startswith("failover-") and resource.custom:
            assert resource.parent == pair.urn


@pytest.mark.parametrize("stack", STACKS)
def test_vrrp_only_between_the_two_nodes_and_redis_only_from_clients(plans, stack):
    plan = plans[stack]
    [group] = _failover(plan, "aws:ec2/securityGroup:SecurityGroup").values()
    ingress = _failover(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    vrrp = [r for r in ingress.values() if r.inputs["ipProtocol"] == "112"]
    assert [r.name for r in vrrp] == ["failover-in-vrrp"]
    assert "cidrIpv4" not in vrrp[0].inputs
    assert vrrp[0].dependencies["referencedSecurityGroupId"] == [group.urn]
    egress = _failover(plan, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert egress["failover-out-vrrp"].dependencies["referencedSecurityGroupId"] == [group.urn]
    clients = [r for r in ingress.values() if "cidrIpv4" in r.inputs]
    vpc_cidr = plan.named("network-vpc").inputs["cidrBlock"]
    assert [(r.inputs["cidrIpv4"], r.inputs["fromPort"]) for r in clients] == [(vpc_cidr, 6379)]


def test_elastic_ip_mode_allocates_an_address_and_never_associates_it(hybrid):
    [eip] = _failover(hybrid, "aws:ec2/eip:Eip").values()
    assert eip.inputs["domain"] == "vpc"
    assert not hybrid.of_type("aws:ec2/eipAssociation:EipAssociation")  # the agents own the association
    clients = [r for r in _failover(hybrid, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").values()
               if "cidrIpv4" in r.inputs]  # fmt: skip
    assert [r.inputs["cidrIpv4"] for r in clients] == ["192.168.40.0/24"]
    subnets = {r.urn: r.name for r in hybrid.of_type("aws:ec2/subnet:Subnet")}
    for eni in _failover(hybrid, "aws:ec2/networkInterface:NetworkInterface").values():
        [subnet] = eni.dependencies["subnetId"]
        assert subnets[subnet].startswith("network-public-")
    azs = {subnets[eni.dependencies["subnetId"][0]] for eni in _failover(
        hybrid, "aws:ec2/networkInterface:NetworkInterface").values()}  # fmt: skip
    assert len(azs) == 2  # across AZs


@pytest.mark.parametrize("stack", STACKS)
def test_every_alarm_goes_to_the_encrypted_topic_of_its_severity(plans, stack):
    plan = plans[stack]
    alarms = _failover(plan, "aws:cloudwatch/metricAlarm:MetricAlarm")
    status = {name: alarms.pop(name) for name in list(alarms) if name.endswith("-status-check")}
    assert set(status) == {"failover-a-status-check", "failover-b-status-check"}  # EC2 status checks, one per node
    assert {r.inputs["name"].rsplit("-session-store-", 1)[1] for r in alarms.values()} == {
        "split-brain", "no-master", "failover", "health-check", "replication-lag", "no-replica"}  # fmt: skip
    topics = {r.name: r for r in plan.of_type("aws:sns/topic:Topic") if r.name in ("alerting-page", "alerting-ticket")}
    assert all(topic.dependencies["kmsMasterKeyId"] for topic in topics.values())
    for alarm in alarms.values():
        name = alarm.inputs["name"].rsplit("-session-store-", 1)[1]
        severity = "critical" if name in ("split-brain", "no-master") else "warning"  # two primaries or none: page
        assert alarm.inputs["tags"]["severity"] == severity
        expected = topics["alerting-page" if severity == "critical" else "alerting-ticket"].urn
        assert alarm.dependencies["alarmActions"] == [expected] == alarm.dependencies["okActions"]
        assert len(alarm.inputs["metricQueries"]) == 3
    lag = next(r for r in alarms.values() if r.inputs["name"].endswith("replication-lag"))
    assert lag.inputs["threshold"] == 5


@pytest.mark.parametrize("stack", STACKS)
def test_the_redis_password_is_generated_and_stored_as_a_secure_string(plans, stack):
    plan = plans[stack]
    [parameter] = _failover(plan, "aws:ssm/parameter:Parameter").values()
    assert parameter.inputs["type"] == "SecureString"
    assert parameter.dependencies["value"] == [plan.named("failover-redis").urn]
    store = plan.stack_outputs["sessionStore"]
    config = load_stack_config(stack, ROOT)
    assert store["endpoint"] == str(aws_layout(config.failover, config.network).vip.ip)
    assert store["passwordParameter"] == parameter.inputs["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_each_node_is_told_the_audit_stream_and_may_put_into_it(plans, stack):
    """The values are outputs (unknown offline): the wiring shows in the dependencies."""
    plan = plans[stack]
    for node in "ab":
        policy = next(r for r in _failover(plan, "aws:iam/rolePolicy:RolePolicy").values() if r.name == f"failover-{node}")
        template = _failover(plan, "aws:ec2/launchTemplate:LaunchTemplate")[f"failover-{node}"]
        for resource, field in ((policy, "policy"), (template, "userData")):
            assert any(urn.endswith("FirehoseDeliveryStream::storage-audit-stream") for urn in resource.dependencies[field])


def test_agent_settings_name_the_audit_stream_on_aws_and_none_on_an_l2_pair():
    from components.failover.render import agent_settings, on_prem_layout

    config = load_stack_config("prod", ROOT)
    layout = aws_layout(config.failover, config.network)
    settings = agent_settings(layout, "a", config.failover, "pair", region="us-east-1", network_interface_id="eni-a",
                              allocation_id=None, audit_stream="platform-prod-audit")  # fmt: skip
    assert settings["auditStream"] == "platform-prod-audit"
    onprem = load_stack_config("hybrid", ROOT, EXAMPLES).failover  # the example with an on-premises pair
    l2 = agent_settings(on_prem_layout(onprem), "a", onprem, "pair", audit_stream="platform-prod-audit")
    assert l2["auditStream"] is None  # no AWS credentials on premises: events stay in the node's event log

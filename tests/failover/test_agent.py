"""The node agent's AWS calls against moto: VIP movers, retries on throttling, metrics, bootstrap."""

from __future__ import annotations

import json
import stat

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from components.failover.policies import METRIC_NAMESPACE, alarm_metric_queries, alarm_specs, node_role_policy
from components.failover.runtime import failover_agent as agent

from .aws_semantics import aws_reassignment

VIP = "10.0.1.12"


def _settings(tmp_path, **vip) -> agent.Settings:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({
        "pair": "pair", "node": "a", "peerAddress": "10.0.1.11", "redisPort": 6379, "vip": vip,
        "stateDir": str(tmp_path / "state"), "eventLog": str(tmp_path / "events.jsonl"), "region": "us-east-1",
        "metrics": True, "metricNamespace": METRIC_NAMESPACE, "redisPasswordFile": str(tmp_path / "redis.pass"),
    }))  # fmt: skip
    return agent.Settings.load(str(path))


@pytest.fixture
def ec2():
    with mock_aws(), aws_reassignment():
        client = boto3.client("ec2", region_name="us-east-1")
        vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        client.enis = [client.create_network_interface(SubnetId=subnet, PrivateIpAddress=f"10.0.1.{n}")
                       ["NetworkInterface"]["NetworkInterfaceId"] for n in (10, 11)]  # fmt: skip
        yield client


def _calls(client, operation: str) -> list[str]:
    seen: list[str] = []
    client.meta.events.register(f"before-call.ec2.{operation}", lambda **kwargs: seen.append(operation))
    return seen


def _events(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


def test_secondary_ip_moves_between_nodes_and_is_confirmed(ec2, tmp_path):
    a, b = ec2.enis
    settings = _settings(tmp_path, mode="secondaryIp", address=VIP, networkInterfaceId=a)
    assert agent.ensure_vip_here(settings, agent.SecondaryIpMover(ec2, VIP, a)) is True
    assert agent.ensure_vip_here(settings, agent.SecondaryIpMover(ec2, VIP, b)) is True

    def holds(eni):
        [found] = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
        return VIP in {item["PrivateIpAddress"] for item in found["PrivateIpAddresses"]}

    assert holds(b) and not holds(a)
    moved = [e for e in _events(tmp_path) if e["event"] == "vip_moved"]
    assert [e["to"] for e in moved] == [a, b] and all(e["confirm_seconds"] >= 0 for e in moved)


def test_a_move_to_where_the_vip_already_is_makes_no_call(ec2, tmp_path):
    a, _ = ec2.enis
    settings = _settings(tmp_path, mode="secondaryIp", address=VIP, networkInterfaceId=a)
    mover = agent.SecondaryIpMover(ec2, VIP, a)
    agent.ensure_vip_here(settings, mover)
    assigned = _calls(ec2, "AssignPrivateIpAddresses")
    assert agent.ensure_vip_here(settings, mover) is False
    assert assigned == []


def test_elastic_ip_reassociates_across_interfaces(ec2, tmp_path):
    a, b = ec2.enis
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    settings = _settings(tmp_path, mode="elasticIp", allocationId=allocation, networkInterfaceId=a)
    assert agent.ensure_vip_here(settings, agent.ElasticIpMover(ec2, allocation, a))
    associated = _calls(ec2, "AssociateAddress")
    assert agent.ensure_vip_here(settings, agent.ElasticIpMover(ec2, allocation, b))
    [address] = ec2.describe_addresses(AllocationIds=[allocation])["Addresses"]
    assert address["NetworkInterfaceId"] == b and associated == ["AssociateAddress"]
    assert agent.ensure_vip_here(settings, agent.ElasticIpMover(ec2, allocation, b)) is False


def test_make_mover_builds_a_retrying_client_and_backs_off_on_request_limit_exceeded(ec2, tmp_path):
    """botocore's standard retry mode: RequestLimitExceeded is retried with backoff, then succeeds."""
    a, _ = ec2.enis
    settings = _settings(tmp_path, mode="secondaryIp", address=VIP, networkInterfaceId=a)
    mover = agent.make_mover(settings)
    assert mover.ec2.meta.config.retries["mode"] == "standard"
    throttled: list[int] = []

    def throttle(request, **kwargs):
        if len(throttled) < 2:
            throttled.append(1)
            body = (b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
                    b"</Message></Error></Errors><RequestID>r</RequestID></Response>")  # fmt: skip
            return AWSResponse(request.url, 503, {}, _Raw(body))
        return None

    mover.ec2.meta.events.register_first("before-send.ec2.AssignPrivateIpAddresses", throttle)
    assert agent.ensure_vip_here(settings, mover) is True
    assert len(throttled) == 2 and VIP in {i["PrivateIpAddress"] for i in ec2.describe_network_interfaces(
        NetworkInterfaceIds=[a])["NetworkInterfaces"][0]["PrivateIpAddresses"]}  # fmt: skip


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs):
        yield self.body

    def read(self, *args):
        body, self.body = self.body, b""
        return body


def test_an_unconfirmed_move_raises_and_is_logged(tmp_path):
    class Stuck:
        eni = "eni-a"

        def holder(self):
            return "eni-b"

        def move_here(self):
            pass

    settings = _settings(tmp_path, mode="secondaryIp", address=VIP, networkInterfaceId="eni-a")
    with pytest.raises(agent.VipMoveError, match="eni-a"):
        agent.ensure_vip_here(settings, Stuck(), confirm_timeout=0.3, poll=0.05)
    assert _events(tmp_path)[-1]["event"] == "vip_move_unconfirmed"


def test_l2_mode_makes_no_aws_client(tmp_path):
    assert agent.make_mover(_settings(tmp_path, mode="l2")) is None


def test_metrics_land_in_cloudwatch_under_the_pair_and_node(tmp_path):
    with mock_aws():
        settings = _settings(tmp_path, mode="l2")
        data = agent.publish_metrics(settings, "MASTER", True, extra={"ReplicationLagSeconds": 0.0,
                                                                      "ReplicasConnected": 1.0})  # fmt: skip
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        names = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace=METRIC_NAMESPACE)["Metrics"]}
        assert names == {"IsMaster", "HealthCheckOk", "ReplicationLagSeconds", "ReplicasConnected"}
        assert {d["Name"]: d["Value"] for d in data[0]["Dimensions"]} == {"Pair": "pair", "Node": "a"}
        # Every metric an alarm reads is one the agent publishes (Failover comes from notify MASTER).
        published = names | {"Failover"}
        assert {spec.metric for spec in alarm_specs(5)} <= published


def test_bootstrap_writes_the_password_files_from_ssm_owner_only(tmp_path):
    with mock_aws():
        ssm = boto3.client("ssm", region_name="us-east-1")
        ssm.put_parameter(Name="/platform/pair/redis-password", Value="s3cret-value", Type="SecureString")
        settings = _settings(tmp_path, mode="l2")
        agent.bootstrap(settings, "/platform/pair/redis-password", str(tmp_path / "redis-auth.conf"))
    assert (tmp_path / "redis.pass").read_text().strip() == "s3cret-value"
    auth = (tmp_path / "redis-auth.conf").read_text()
    assert "user app on >s3cret-value" in auth and "user default on nopass resetchannels -@all +ping" in auth
    assert 'masterauth "s3cret-value"' in auth and "masteruser app" in auth
    for name in ("redis.pass", "redis-auth.conf"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) & 0o007 == 0


def test_each_node_may_move_the_vip_only_onto_its_own_interface():
    policy = json.loads(node_role_policy(mode="secondaryIp", region="us-east-1", account_id="111122223333",
                                         network_interface_id="eni-a", allocation_id=None,
                                         password_parameter_arn="arn:aws:ssm:us-east-1:111122223333:parameter/p"))  # fmt: skip
    move = next(s for s in policy["Statement"] if s["Sid"] == "TakeSecondaryIp")
    assert move["Resource"] == "arn:aws:ec2:us-east-1:111122223333:network-interface/eni-a"
    eip = json.loads(node_role_policy(mode="elasticIp", region="us-east-1", account_id="111122223333",
                                      network_interface_id="eni-a", allocation_id="eipalloc-1",
                                      password_parameter_arn="arn:aws:ssm:us-east-1:111122223333:parameter/p"))  # fmt: skip
    take = next(s for s in eip["Statement"] if s["Sid"] == "TakeElasticIp")
    assert sorted(take["Resource"]) == ["arn:aws:ec2:us-east-1:111122223333:elastic-ip/eipalloc-1",
                                        "arn:aws:ec2:us-east-1:111122223333:network-interface/eni-a"]  # fmt: skip
    metrics = next(s for s in eip["Statement"] if s["Sid"] == "PublishPairMetrics")
    assert metrics["Condition"]["StringEquals"]["cloudwatch:namespace"] == METRIC_NAMESPACE
    assert not any(s["Sid"] == "PutAuditEvents" for s in eip["Statement"])  # no stream given, no grant
    stream = "arn:aws:firehose:us-east-1:111122223333:deliverystream/platform-dev-audit"
    audited = json.loads(node_role_policy(mode="secondaryIp", region="us-east-1", account_id="111122223333",
                                          network_interface_id="eni-a", allocation_id=None, audit_stream_arn=stream,
                                          password_parameter_arn="arn:aws:ssm:us-east-1:111122223333:parameter/p"))  # fmt: skip
    put = next(s for s in audited["Statement"] if s["Sid"] == "PutAuditEvents")
    assert (put["Action"], put["Resource"]) == ("firehose:PutRecord", stream)  # this stream, and putting only


def test_alarm_queries_read_both_nodes_and_return_one_series():
    for spec in alarm_specs(5):
        queries = alarm_metric_queries(spec, "pair")
        assert [q["id"] for q in queries] == ["a", "b", "pair"]
        assert [q["return_data"] for q in queries] == [False, False, True]
        assert {q["metric"]["dimensions"]["Node"] for q in queries[:2]} == {"a", "b"}
    by_name = {spec.name: spec for spec in alarm_specs(5)}
    assert by_name["split-brain"].comparison == "GreaterThanThreshold" and by_name["split-brain"].threshold == 1
    assert by_name["no-master"].treat_missing_data == "breaching"
    assert by_name["replication-lag"].threshold == 5

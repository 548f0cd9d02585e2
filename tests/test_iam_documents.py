"""Every IAM document the program emits parses as IAM grammar (moto's policy validator)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from components.eks.policies import irsa_trust_policy, service_trust_policy
from components.gpu.policies import (
    events_to_queue_policy,
    events_to_topic_policy,
    node_termination_handler_policy,
    topic_key_policy,
)
from components.alerting.alertmanager import publisher_policy
from components.failover.policies import node_role_policy
from components.network import flow_logs_delivery_policy, flow_logs_trust_policy
from components.storage.firehose import delivery_role_policy, shipper_policy

QUEUE = "arn:aws:sqs:us-east-1:111122223333:gpu-interruptions"
RULES = ["arn:aws:events:us-east-1:111122223333:rule/a", "arn:aws:events:us-east-1:111122223333:rule/b"]
OIDC = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"

IDENTITY_POLICIES = {
    "node-termination-handler": node_termination_handler_policy(QUEUE),
    "flow-logs-delivery": flow_logs_delivery_policy("arn:aws:logs:us-east-1:111122223333:log-group:x"),
    **{f"failover-node-{mode}": node_role_policy(
        mode=mode, region="us-east-1", account_id="111122223333", network_interface_id="eni-0a1b2c3d4e5f60718",
        allocation_id="eipalloc-0a1b2c3d4e5f60718", password_parameter_arn="arn:aws:ssm:us-east-1:111122223333:parameter/p",
        audit_stream_arn="arn:aws:firehose:us-east-1:111122223333:deliverystream/platform-dev-audit")
       for mode in ("secondaryIp", "elasticIp")},
    "firehose-delivery": json.dumps(delivery_role_policy(
        "arn:aws:s3:::platform-dev-logs", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:logs:us-east-1:111122223333:log-group:/aws/kinesisfirehose/platform-dev-logs")),
    "alertmanager-publisher": json.dumps(publisher_policy(
        ["arn:aws:sns:us-east-1:111122223333:page", "arn:aws:sns:us-east-1:111122223333:ticket"],
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")),
    "log-shipper": json.dumps(shipper_policy("arn:aws:firehose:us-east-1:111122223333:deliverystream/platform-dev-logs",
                                             "arn:aws:firehose:us-east-1:111122223333:deliverystream/platform-dev-audit")),
}
TRUST_POLICIES = {
    "eks-cluster": service_trust_policy("eks.amazonaws.com", ("sts:AssumeRole", "sts:TagSession")),
    "nodes": service_trust_policy("ec2.amazonaws.com"),
    "irsa": irsa_trust_policy(OIDC, "https://oidc.eks.us-east-1.amazonaws.com/id/ABC", "kube-system", "nth"),
    "flow-logs": flow_logs_trust_policy("111122223333", "us-east-1"),
}


@pytest.fixture
def iam():
    with mock_aws():
        yield boto3.client("iam", region_name="us-east-1")


@pytest.mark.parametrize("name", sorted(IDENTITY_POLICIES))
def test_identity_policies_are_valid_iam(iam, name):
    arn = iam.create_policy(PolicyName=name, PolicyDocument=IDENTITY_POLICIES[name])["Policy"]["Arn"]
    assert arn.endswith(f":policy/{name}")


@pytest.mark.parametrize("name", sorted(TRUST_POLICIES))
def test_trust_policies_are_valid_iam(iam, name):
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST_POLICIES[name])["Role"]
    assert role["RoleName"] == name


def test_the_validator_rejects_bad_grammar(iam):
    bad = json.loads(IDENTITY_POLICIES["node-termination-handler"])
    bad["Statement"][0]["Effect"] = "Maybe"
    with pytest.raises(ClientError, match="MalformedPolicyDocument"):
        iam.create_policy(PolicyName="bad", PolicyDocument=json.dumps(bad))


def test_resource_policies_admit_only_this_stacks_rules_over_tls():
    queue = json.loads(events_to_queue_policy(QUEUE, RULES))
    allow, deny = queue["Statement"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": RULES}}
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    topic = json.loads(events_to_topic_policy("arn:aws:sns:us-east-1:111122223333:t", RULES))
    assert topic["Statement"][0]["Action"] == "sns:Publish"
    key = json.loads(topic_key_policy("111122223333"))
    assert key["Statement"][1]["Condition"] == {"StringEquals": {"aws:SourceAccount": "111122223333"}}


def test_node_termination_handler_may_complete_hooks_only_on_managed_groups():
    statements = {s["Sid"]: s for s in json.loads(IDENTITY_POLICIES["node-termination-handler"])["Statement"]}
    assert statements["ConsumeInterruptionQueue"]["Resource"] == QUEUE
    assert statements["CompleteTerminationHooks"]["Condition"] == {
        "StringEquals": {"autoscaling:ResourceTag/aws-node-termination-handler/managed": "true"}
    }

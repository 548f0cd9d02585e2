"""Interruption rules: each pattern catches its events and no others.

moto 5.2's ``events.test_event_pattern`` is a stub that matches nothing and says
nothing, so the patterns are checked the way EventBridge applies them: each rule is
created in moto with an SQS target, real-shaped events are put on the bus, and the
queues show which rules matched (moto's own pattern matcher, incl. $or and prefix).
"""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from components.gpu import events

REGION = "us-east-1"
INSTANCE = "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc"

# (event, the rules that must match it). Shapes follow the events AWS documents.
SAMPLES: list[tuple[dict, set[str]]] = [
    (
        {"source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption Warning",
         "resources": [INSTANCE], "detail": {"instance-id": "i-0abc", "instance-action": "terminate"}},
        {"spot-interruption"},
    ),
    (
        {"source": "aws.ec2", "detail-type": "EC2 Instance Rebalance Recommendation",
         "resources": [INSTANCE], "detail": {"instance-id": "i-0abc"}},
        {"rebalance"},
    ),
    (
        {"source": "aws.autoscaling", "detail-type": "EC2 Instance-terminate Lifecycle Action",
         "detail": {"LifecycleActionToken": "t", "AutoScalingGroupName": "gpu-spot", "LifecycleHookName":
                    "drain-before-terminate", "EC2InstanceId": "i-0abc",
                    "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}},
        {"asg-terminate"},
    ),
    (
        {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
         "resources": [INSTANCE], "detail": {"instance-id": "i-0abc", "state": "shutting-down"}},
        {"state-change"},
    ),
    (
        {"source": "aws.health", "detail-type": "AWS Health Event",
         "detail": {"service": "EC2", "eventTypeCategory": "scheduledChange",
                    "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"}},
        {"scheduled-change"},
    ),
    (
        {"source": "aws.health", "detail-type": "AWS Health Event",
         "detail": {"service": "EC2", "eventTypeCategory": "accountNotification",
                    "eventTypeCode": "AWS_EC2_ODCR_UNDERUTILIZATION_NOTIFICATION"}},
        {"capacity-reservation"},
    ),
    (
        {"source": "aws.ec2", "detail-type": "EC2 Capacity Reservation Instance Interruption Warning",
         "resources": [INSTANCE], "detail": {"instance-id": "i-0abc", "instance-action": "terminate"}},
        {"capacity-reservation"},
    ),
    # Unrelated events that must reach nobody.
    (
        {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
         "resources": [INSTANCE], "detail": {"instance-id": "i-0abc", "state": "running"}},
        set(),
    ),
    (
        {"source": "aws.health", "detail-type": "AWS Health Event",
         "detail": {"service": "S3", "eventTypeCategory": "issue", "eventTypeCode": "AWS_S3_OPERATIONAL_ISSUE"}},
        set(),
    ),
    (
        {"source": "aws.autoscaling", "detail-type": "EC2 Instance Launch Successful",
         "detail": {"AutoScalingGroupName": "gpu-spot"}},
        set(),
    ),
]  # fmt: skip


@pytest.fixture
def delivered():
    """Put every sample on a moto bus; return {sample index: rules whose queue got it}."""
    with mock_aws():
        bus = boto3.client("events", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queues = {}
        for rule in events.RULES:
            url = sqs.create_queue(QueueName=rule.name)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            bus.put_rule(Name=rule.name, EventPattern=json.dumps(rule.pattern))
            bus.put_targets(Rule=rule.name, Targets=[{"Id": "q", "Arn": arn}])
            queues[rule.name] = url
        for index, (event, _) in enumerate(SAMPLES):
            result = bus.put_events(
                Entries=[{
                    "Source": event["source"], "DetailType": event["detail-type"],
                    "Resources": event.get("resources", []),
                    "Detail": json.dumps({**event["detail"], "sample": index}),
                }]  # fmt: skip
            )
            assert result["FailedEntryCount"] == 0
        got: dict[int, set[str]] = {i: set() for i in range(len(SAMPLES))}
        for name, url in queues.items():
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                got[json.loads(message["Body"])["detail"]["sample"]].add(name)
        yield got


def test_each_event_reaches_exactly_the_rules_meant_for_it(delivered):
    for index, (event, expected) in enumerate(SAMPLES):
        assert delivered[index] == expected, (event["detail-type"], event["detail"])


def test_every_rule_is_exercised():
    covered = set().union(*(expected for _, expected in SAMPLES))
    assert covered == {rule.name for rule in events.RULES}


def test_deliveries_are_split_between_machines_and_people():
    by_name = {rule.name: rule for rule in events.RULES}
    # The Node Termination Handler needs these to drain in time...
    assert {n for n, r in by_name.items() if r.to_queue} == {
        "spot-interruption", "rebalance", "asg-terminate", "state-change", "scheduled-change"
    }
    # ...and people hear about capacity loss and reservation trouble, not every lifecycle step.
    assert {n for n, r in by_name.items() if r.to_topic} == {
        "spot-interruption", "rebalance", "scheduled-change", "capacity-reservation"
    }


def test_planned_rules_carry_these_patterns(plans):
    plan = plans["prod"]
    planned = {r.name.removeprefix("gpu-"): r for r in plan.of_type("aws:cloudwatch/eventRule:EventRule")}
    assert set(planned) == {rule.name for rule in events.RULES}
    for rule in events.RULES:
        assert json.loads(planned[rule.name].inputs["eventPattern"]) == rule.pattern
    targets = plan.of_type("aws:cloudwatch/eventTarget:EventTarget")
    expected_targets = sum(rule.to_queue + rule.to_topic for rule in events.RULES)
    assert len(targets) == expected_targets

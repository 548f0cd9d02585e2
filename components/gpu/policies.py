"""IAM, SQS, SNS and KMS policy documents of the GPU capacity component (pure)."""

from __future__ import annotations

import json
from collections.abc import Sequence


def _doc(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def node_termination_handler_policy(queue_arn: str) -> str:
    """What the Node Termination Handler needs in queue mode, and no more."""
    return _doc(
        {
            "Sid": "ConsumeInterruptionQueue",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            "Resource": queue_arn,
        },
        {
            "Sid": "CompleteTerminationHooks",
            "Effect": "Allow",
            "Action": ["autoscaling:CompleteLifecycleAction"],
            "Resource": "*",
            "Condition": {"StringEquals": {"autoscaling:ResourceTag/aws-node-termination-handler/managed": "true"}},
        },
        {
            "Sid": "DescribeNodes",
            "Effect": "Allow",
            "Action": ["autoscaling:DescribeAutoScalingInstances", "autoscaling:DescribeTags", "ec2:DescribeInstances"],
            "Resource": "*",
        },
    )


def _from_rules(action: str, resource_arn: str, rule_arns: Sequence[str]) -> dict:
    """EventBridge may ``action`` on the resource, on behalf of these rules only."""
    return {
        "Sid": "EventBridgeRules",
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": action,
        "Resource": resource_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": list(rule_arns)}},
    }


def events_to_queue_policy(queue_arn: str, rule_arns: Sequence[str]) -> str:
    """Only this stack's EventBridge rules may send to the queue, and only over TLS."""
    return _doc(
        _from_rules("sqs:SendMessage", queue_arn, rule_arns),
        {
            "Sid": "TlsOnly",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": queue_arn,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    )


def events_to_topic_policy(topic_arn: str, rule_arns: Sequence[str]) -> str:
    return _doc(_from_rules("sns:Publish", topic_arn, rule_arns))


def topic_key_policy(account_id: str) -> str:
    """The topic's CMK: the account administers it, EventBridge may encrypt with it.

    (SNS's AWS-managed key cannot be used: EventBridge is not allowed to use it.)
    """
    return _doc(
        {
            "Sid": "AccountAdministers",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "EventBridgePublishes",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": ["kms:GenerateDataKey*", "kms:Decrypt"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        },
    )

"""EventBridge patterns for GPU capacity events, and where each kind is delivered.

Delivered to the SQS queue the Node Termination Handler drains from (what it needs to
cordon and drain a node in time) and to the SNS topic the alerting work subscribes to
(what a human should hear about). Tested against real-shaped events with moto's
``events.test_event_pattern`` (tests/test_gpu_events.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InterruptionRule:
    name: str
    description: str
    pattern: dict
    to_queue: bool  # the Node Termination Handler acts on it
    to_topic: bool  # people are told


RULES: tuple[InterruptionRule, ...] = (
    InterruptionRule(
        "spot-interruption",
        "Spot instance interruption warning (two minutes' notice)",
        {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
        to_queue=True,
        to_topic=True,
    ),
    InterruptionRule(
        "rebalance",
        "Spot instance at elevated risk of interruption (rebalance recommendation)",
        {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
        to_queue=True,
        to_topic=True,
    ),
    InterruptionRule(
        "asg-terminate",
        "Auto Scaling is about to terminate a node (lifecycle hook): drain it first",
        {"source": ["aws.autoscaling"], "detail-type": ["EC2 Instance-terminate Lifecycle Action"]},
        to_queue=True,
        to_topic=False,
    ),
    InterruptionRule(
        "state-change",
        "An instance stopped or is terminating outside Auto Scaling",
        {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 Instance State-change Notification"],
            "detail": {"state": ["stopping", "stopped", "shutting-down", "terminated"]},
        },
        to_queue=True,
        to_topic=False,
    ),
    InterruptionRule(
        "scheduled-change",
        "AWS scheduled maintenance (retirement, reboot) for an EC2 instance",
        {
            "source": ["aws.health"],
            "detail-type": ["AWS Health Event"],
            "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]},
        },
        to_queue=True,
        to_topic=True,
    ),
    InterruptionRule(
        "capacity-reservation",
        "Capacity reservation events: underutilisation (money idle) and instance interruption",
        {
            "$or": [
                {
                    "source": ["aws.health"],
                    "detail": {"eventTypeCode": [{"prefix": "AWS_EC2_ODCR_UNDERUTILIZATION"}]},
                },
                {
                    "source": ["aws.ec2"],
                    "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"],
                },
            ]
        },
        to_queue=False,
        to_topic=True,
    ),
)

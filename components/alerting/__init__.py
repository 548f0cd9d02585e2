"""The alerting topic: where CloudWatch alarms of every component go (encrypted SNS)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.base import PlatformComponent
from components.config import AlertingConfig
from components.tagging import TagContext


def alarm_topic_key_policy(account_id: str) -> str:
    """The topic's CMK: the account administers it; CloudWatch alarms may encrypt with it.

    (SNS's AWS-managed key can't be used: CloudWatch isn't allowed to use it.)
    """
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountAdministers", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "CloudWatchAlarmsEncrypt", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": ["kms:GenerateDataKey*", "kms:Decrypt"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:SourceAccount": account_id}}},
    ]})  # fmt: skip


def alarm_topic_policy(topic_arn: str, account_id: str) -> str:
    """This account's CloudWatch alarms may publish; nobody may publish over plain HTTP."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "CloudWatchAlarms", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": "sns:Publish", "Resource": topic_arn,
         "Condition": {"StringEquals": {"aws:SourceAccount": account_id}}},
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "sns:Publish", "Resource": topic_arn,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]})  # fmt: skip


@dataclass(frozen=True)
class AlertTopicArgs:
    config: AlertingConfig


class AlertTopic(PlatformComponent):
    """``platform:alerting:AlertTopic`` — an encrypted SNS topic CloudWatch alarms publish to.

    Outputs: ``topic_arn``.
    """

    def __init__(self, name: str, args: AlertTopicArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        super().__init__("platform:alerting:AlertTopic", name, "alerting", tags, provider, opts)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))
        key = aws.kms.Key(self.child_name("topic"), description="Encrypts the alerting topic (CloudWatch alarms publish)",
                          enable_key_rotation=True, policy=identity.account_id.apply(alarm_topic_key_policy),
                          tags=self.tags("topic"), opts=self.child_opts())  # fmt: skip
        topic = aws.sns.Topic(self.child_name("topic"), kms_master_key_id=key.arn, tags=self.tags("topic"),
                              opts=self.child_opts())  # fmt: skip
        aws.sns.TopicPolicy(self.child_name("topic"), arn=topic.arn,
                            policy=pulumi.Output.all(topic.arn, identity.account_id).apply(lambda v: alarm_topic_policy(*v)),
                            opts=self.child_opts())  # fmt: skip
        for index, email in enumerate(args.config.emails):
            aws.sns.TopicSubscription(self.child_name(f"email-{index}"), topic=topic.arn, protocol="email",
                                      endpoint=email, opts=self.child_opts())  # fmt: skip
        self.topic_arn = topic.arn
        self.register_outputs({"topic_arn": topic.arn})

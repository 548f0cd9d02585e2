"""The alerting topic: where CloudWatch alarms of every component go (encrypted SNS)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.base import PlatformComponent
from components.config import AlertingConfig
from components.tagging import TagContext


# AWS services that publish to the alert topics (encrypted, so they need the key too).
PUBLISHERS = ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"]


def alarm_topic_key_policy(account_id: str) -> str:
    """The topic's CMK: the account administers it; CloudWatch alarms and AWS Budgets may encrypt with it.

    (SNS's AWS-managed key can't be used: those services aren't allowed to use it.)
    """
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountAdministers", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "AlarmsAndBudgetsEncrypt", "Effect": "Allow", "Principal": {"Service": PUBLISHERS},
         "Action": ["kms:GenerateDataKey*", "kms:Decrypt"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:SourceAccount": account_id}}},
    ]})  # fmt: skip


def alarm_topic_policy(topic_arn: str, account_id: str) -> str:
    """This account's CloudWatch alarms and budgets may publish; nobody may publish over plain HTTP."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "AlarmsAndBudgets", "Effect": "Allow", "Principal": {"Service": PUBLISHERS},
         "Action": "sns:Publish", "Resource": topic_arn,
         "Condition": {"StringEquals": {"aws:SourceAccount": account_id}}},
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "sns:Publish", "Resource": topic_arn,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]})  # fmt: skip


# Alert severity -> the topic it goes to: critical pages someone, warning opens a ticket.
SEVERITY_TOPICS = {"critical": "page", "warning": "ticket"}


@dataclass(frozen=True)
class AlertTopicArgs:
    config: AlertingConfig


class AlertTopic(PlatformComponent):
    """``platform:alerting:AlertTopic`` — one encrypted SNS topic per severity (page, ticket).

    CloudWatch alarms and Alertmanager publish to them; ``alerting.emails`` subscribe to both,
    ``alerting.page`` / ``alerting.ticket`` add per-topic email and HTTPS subscribers.

    Outputs: ``topic_arns`` (severity -> topic ARN), ``key_arn``.
    """

    def __init__(self, name: str, args: AlertTopicArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        super().__init__("platform:alerting:AlertTopic", name, "alerting", tags, provider, opts)
        config = args.config
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))
        key = aws.kms.Key(self.child_name("topic"), description="Encrypts the alert topics (CloudWatch alarms publish)",
                          enable_key_rotation=True, policy=identity.account_id.apply(alarm_topic_key_policy),
                          tags=self.tags("topic"), opts=self.child_opts())  # fmt: skip
        self.topic_arns: dict[str, pulumi.Output[str]] = {}
        for severity, topic_name in SEVERITY_TOPICS.items():
            targets = getattr(config, topic_name)
            # The page topic is the single topic of 0.8-0.10, renamed: aliases keep it (and its
            # confirmed subscriptions) instead of replacing it.
            renamed = topic_name == "page"
            topic = aws.sns.Topic(self.child_name(topic_name), kms_master_key_id=key.arn, tags=self.tags(topic_name),
                                  opts=self.child_opts(aliases=self._was("topic", renamed)))  # fmt: skip
            aws.sns.TopicPolicy(self.child_name(topic_name), arn=topic.arn,
                                policy=pulumi.Output.all(topic.arn, identity.account_id).apply(lambda v: alarm_topic_policy(*v)),
                                opts=self.child_opts(aliases=self._was("topic", renamed)))  # fmt: skip
            subscribers = [("email", e) for e in [*config.emails, *targets.emails]] + [("https", u) for u in targets.https_endpoints]
            for index, (protocol, endpoint) in enumerate(subscribers):
                old = renamed and protocol == "email" and index < len(config.emails)
                aws.sns.TopicSubscription(self.child_name(f"{topic_name}-{protocol}-{index}"), topic=topic.arn,
                                          protocol=protocol, endpoint=endpoint,
                                          opts=self.child_opts(aliases=self._was(f"email-{index}", old)))  # fmt: skip
            self.topic_arns[severity] = topic.arn
        self.key_arn = key.arn
        self.register_outputs({"topic_arns": self.topic_arns, "key_arn": key.arn})

    def _was(self, old_suffix: str, applies: bool) -> list[pulumi.Alias]:
        return [pulumi.Alias(name=self.child_name(old_suffix))] if applies else []

"""``platform:cost:CostGuardrails``: the budgets (finance's, on-call's), allocation tags, CUR export, ledger bucket."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.base import PlatformComponent
from components.config import BudgetThresholdConfig, CostConfig
from components.tagging import STANDARD_TAG_KEYS, TagContext

# Tag keys finance groups spend by (the Name tag is per resource, not a grouping).
ALLOCATION_TAG_KEYS = tuple(k for k in STANDARD_TAG_KEYS if k != "Name")


@dataclass(frozen=True)
class CostGuardrailsArgs:
    config: CostConfig
    environment: str
    name_prefix: str  # <project>-<environment>
    region: str
    # On-call's budget thresholds (alerting.budgetThresholds) and the alert topics per severity.
    alert_thresholds: Sequence[BudgetThresholdConfig] = ()
    alert_topic_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def budget_notifications(config: CostConfig, topic_arn: pulumi.Input[str]) -> list[dict]:
    return [{"comparison_operator": "GREATER_THAN", "threshold": threshold, "threshold_type": "PERCENTAGE",
             "notification_type": kind, "subscriber_sns_topic_arns": [topic_arn]}
            for kind, thresholds in (("ACTUAL", config.actual_thresholds), ("FORECASTED", config.forecast_thresholds))
            for threshold in thresholds]  # fmt: skip


def alert_notifications(thresholds: Sequence[BudgetThresholdConfig], topic_arns: Mapping[str, pulumi.Input[str]]) -> list[dict]:
    """On-call's notifications: each to the alert topic of its severity.

    AWS Budgets takes one SNS topic per notification and one notification per (spend,
    percent), so these live on a budget of their own rather than beside finance's.
    """
    return [{"comparison_operator": "GREATER_THAN", "threshold": t.percent, "threshold_type": "PERCENTAGE",
             "notification_type": t.spend.upper(), "subscriber_sns_topic_arns": [topic_arns[t.severity]]}
            for t in thresholds]  # fmt: skip


def topic_policy(topic_arn: str, account_id: str) -> str:
    """AWS Budgets (this account's only) may publish to the finance topic."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "BudgetsPublish", "Effect": "Allow", "Principal": {"Service": "budgets.amazonaws.com"},
        "Action": "SNS:Publish", "Resource": topic_arn,
        "Condition": {"StringEquals": {"aws:SourceAccount": account_id}}}]})  # fmt: skip


def bucket_policy(bucket_arn: str, readers: list[str], export_account: str | None = None, region: str = "") -> str:
    """TLS only; finance reads; with ``export_account``, Data Exports writes (that account's exports only)."""
    statements: list[dict] = [
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [bucket_arn, f"{bucket_arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]  # fmt: skip
    if export_account is not None:
        source = {"aws:SourceAccount": export_account,
                  "aws:SourceArn": [f"arn:aws:cur:{region}:{export_account}:definition/*",
                                    f"arn:aws:bcm-data-exports:{region}:{export_account}:export/*"]}  # fmt: skip
        statements.append({"Sid": "DataExportsWrite", "Effect": "Allow",
                           "Principal": {"Service": ["billingreports.amazonaws.com", "bcm-data-exports.amazonaws.com"]},
                           "Action": ["s3:PutObject", "s3:GetBucketPolicy"], "Resource": [bucket_arn, f"{bucket_arn}/*"],
                           "Condition": {"StringLike": source}})  # fmt: skip
    if readers:
        statements.append({"Sid": "FinanceReads", "Effect": "Allow", "Principal": {"AWS": readers},
                           "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": [bucket_arn, f"{bucket_arn}/*"]})  # fmt: skip
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


class CostGuardrails(PlatformComponent):
    def __init__(self, name: str, args: CostGuardrailsArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        super().__init__("platform:cost:CostGuardrails", name, name, tags, provider, opts)
        config = args.config
        account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=provider)).account_id
        # Budget alerts carry no secrets; an SSE key would need a policy for AWS Budgets.
        topic = aws.sns.Topic(self.child_name("finance"), name=f"{args.name_prefix}-finance",
                              tags=self.tags("finance"), opts=self.child_opts())  # fmt: skip
        aws.sns.TopicPolicy(self.child_name("finance"), arn=topic.arn,
                            policy=pulumi.Output.all(topic.arn, account_id).apply(lambda a: topic_policy(*a)),
                            opts=self.child_opts())  # fmt: skip
        for index, address in enumerate(config.finance_emails):
            aws.sns.TopicSubscription(self.child_name(f"finance-email-{index}"), topic=topic.arn, protocol="email",
                                      endpoint=address, opts=self.child_opts())  # fmt: skip
        budgets = {"monthly": budget_notifications(config, topic.arn)}
        if args.alert_thresholds and args.alert_topic_arns:
            budgets["monthly-oncall"] = alert_notifications(args.alert_thresholds, args.alert_topic_arns)
        for suffix, notifications in budgets.items():
            aws.budgets.Budget(
                self.child_name(suffix), name=f"{args.name_prefix}-{suffix}", budget_type="COST",
                limit_amount=f"{config.monthly_budget_usd:.2f}", limit_unit="USD", time_unit="MONTHLY",
                # Spend of this environment only: the allocation tag every resource carries.
                cost_filters=[{"name": "TagKeyValue", "values": [f"user:environment${args.environment}"]}],
                notifications=notifications, tags=self.tags(suffix), opts=self.child_opts(),
            )  # fmt: skip
        if config.activate_allocation_tags:
            for key in ALLOCATION_TAG_KEYS:
                aws.costexplorer.CostAllocationTag(self.child_name(f"tag-{key}"), tag_key=key, status="Active",
                                                   opts=self.child_opts())  # fmt: skip
        self.ledger_bucket = self._bucket("ledger", f"{args.name_prefix}-cost-ledger", account_id, config, args.region,
                                          exports=False)  # fmt: skip
        if config.cur_export:
            exports = self._bucket("exports", f"{args.name_prefix}-cost-exports", account_id, config, args.region,
                                   exports=True)  # fmt: skip
            aws.bcmdata.Export(
                self.child_name("cur2"),
                export={
                    "name": f"{args.name_prefix}-cur2",
                    "description": "CUR 2.0, resource-level, split cost allocation data (EKS pods)",
                    "data_queries": [{
                        "query_statement": "SELECT * FROM COST_AND_USAGE_REPORT",
                        "table_configurations": {"COST_AND_USAGE_REPORT": {
                            "TIME_GRANULARITY": "HOURLY", "INCLUDE_RESOURCES": "TRUE",
                            "INCLUDE_SPLIT_COST_ALLOCATION_DATA": "TRUE", "INCLUDE_MANUAL_DISCOUNT_COMPATIBILITY": "FALSE"}},
                    }],
                    "destination_configurations": [{"s3_destinations": [{
                        "s3_bucket": exports.bucket, "s3_prefix": "cur2", "s3_region": args.region,
                        "s3_output_configurations": [{"overwrite": "OVERWRITE_REPORT", "format": "PARQUET",
                                                      "compression": "PARQUET", "output_type": "CUSTOM"}],
                    }]}],
                    "refresh_cadences": [{"frequency": "SYNCHRONOUS"}],
                },
                tags=self.tags("cur2"), opts=self.child_opts(),
            )  # fmt: skip
        self.finance_topic_arn = topic.arn
        self.register_outputs({"ledgerBucket": self.ledger_bucket.bucket, "financeTopicArn": topic.arn})

    def _bucket(self, suffix: str, bucket_name: str, account_id: pulumi.Output[str], config: CostConfig, region: str,
                exports: bool) -> aws.s3.Bucket:  # fmt: skip
        bucket = self.private_bucket(suffix, bucket_name)
        readers = list(config.finance_reader_arns)
        policy = pulumi.Output.all(bucket.arn, account_id).apply(
            lambda a: bucket_policy(a[0], readers, export_account=a[1] if exports else None, region=region))
        aws.s3.BucketPolicy(self.child_name(suffix), bucket=bucket.id, policy=policy, opts=self.child_opts())
        return bucket

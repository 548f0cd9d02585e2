"""Budgets, finance notifications, allocation tags and the CUR 2.0 export in the plans."""

from __future__ import annotations

import json

import pytest

import boto3
from moto import mock_aws

from components.alerting import SEVERITY_TOPICS, alarm_topic_key_policy, alarm_topic_policy
from components.config import AlertingConfig, BudgetThresholdConfig, CostConfig
from components.cost.component import (ALLOCATION_TAG_KEYS, alert_notifications, bucket_policy, budget_notifications,
                                       topic_policy)  # fmt: skip
from platformctl.common import load_stack_config

from .conftest import ROOT, STACKS


def _by_name(plan, type_token):
    return {r.name: r.inputs for r in plan.of_type(type_token)}


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_has_a_budget_on_its_own_spend_notifying_finance(plans, stack):
    plan = plans[stack]
    budget = _by_name(plan, "aws:budgets/budget:Budget")["cost-monthly"]
    assert budget["budgetType"] == "COST" and budget["timeUnit"] == "MONTHLY" and budget["limitUnit"] == "USD"
    assert budget["costFilters"] == [{"name": "TagKeyValue", "values": [f"user:environment${stack}"]}]
    kinds = {(n["notificationType"], n["threshold"]) for n in budget["notifications"]}
    assert ("FORECASTED", 100) in kinds and all(n["subscriberSnsTopicArns"] for n in budget["notifications"])
    limits = {"dev": "450.00", "staging": "1500.00", "prod": "5000.00"}
    assert budget["limitAmount"] == limits[stack]
    subscriptions = plan.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert subscriptions and all(s.inputs["protocol"] == "email" for s in subscriptions)


def test_only_prod_owns_the_account_wide_tags_and_export(plans):
    for stack in ("dev", "staging"):
        assert not plans[stack].of_type("aws:costexplorer/costAllocationTag:CostAllocationTag")
        assert not plans[stack].of_type("aws:bcmdata/export:Export")
    tags = {r.inputs["tagKey"]: r.inputs["status"]
            for r in plans["prod"].of_type("aws:costexplorer/costAllocationTag:CostAllocationTag")}  # fmt: skip
    assert tags == {key: "Active" for key in ALLOCATION_TAG_KEYS}
    [export] = plans["prod"].of_type("aws:bcmdata/export:Export")
    query = export.inputs["export"]["dataQueries"][0]
    table = query["tableConfigurations"]["COST_AND_USAGE_REPORT"]
    assert table["INCLUDE_RESOURCES"] == "TRUE" and table["INCLUDE_SPLIT_COST_ALLOCATION_DATA"] == "TRUE"
    s3 = export.inputs["export"]["destinationConfigurations"][0]["s3Destinations"][0]
    assert s3["s3OutputConfigurations"][0]["format"] == "PARQUET"


def test_export_and_ledger_buckets_are_encrypted_private_and_readable_by_finance(plans):
    plan = plans["prod"]
    for name in ("cost-ledger", "cost-exports"):
        sse = _by_name(plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")[name]
        assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
        block = _by_name(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")[name]
        assert block["restrictPublicBuckets"] is True
    policy = json.loads(bucket_policy("arn:aws:s3:::b", ["arn:aws:iam::111122223333:role/finance-analyst"],
                                      export_account="111122223333", region="us-east-1"))  # fmt: skip
    sids = {s["Sid"]: s for s in policy["Statement"]}
    assert sids["DataExportsWrite"]["Condition"]["StringLike"]["aws:SourceAccount"] == "111122223333"
    assert sids["FinanceReads"]["Action"] == ["s3:GetObject", "s3:ListBucket"]
    ledger = json.loads(bucket_policy("arn:aws:s3:::l", []))
    assert [s["Sid"] for s in ledger["Statement"]] == ["TlsOnly"]  # nobody but the account writes the ledger


def test_only_budgets_of_this_account_may_publish_to_finance():
    policy = json.loads(topic_policy("arn:aws:sns:us-east-1:111122223333:f", "111122223333"))
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "budgets.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "111122223333"}}


def test_notifications_and_config_limits():
    config = CostConfig(monthly_budget_usd=100, actual_thresholds=[100, 50], forecast_thresholds=[90])
    assert [(n["notification_type"], n["threshold"]) for n in budget_notifications(config, "arn")] == [
        ("ACTUAL", 50), ("ACTUAL", 100), ("FORECASTED", 90)]
    with pytest.raises(ValueError, match="5 notifications"):
        CostConfig(monthly_budget_usd=1, actual_thresholds=[10, 20, 30, 40], forecast_thresholds=[50, 60])
    with pytest.raises(ValueError, match="more than once"):
        CostConfig(monthly_budget_usd=1, actual_thresholds=[10, 10])


def test_cur_export_outside_us_east_1_is_refused():
    from components.config import ConfigError, parse_config
    from platformctl.project import load_project, read_stack_config

    from .conftest import ROOT

    raw, keys = read_stack_config(load_project(ROOT), "prod")
    raw["platform:aws"] = json.dumps({"region": "eu-west-1"})
    raw["platform:network"] = json.dumps({**json.loads(raw["platform:network"]),
                                          "availabilityZones": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]})  # fmt: skip
    raw["platform:gpu"] = json.dumps({**json.loads(raw["platform:gpu"]), "reserved": {
        **json.loads(raw["platform:gpu"])["reserved"], "availabilityZone": "eu-west-1b"}})  # fmt: skip
    with pytest.raises(ConfigError, match="platform:cost.curExport = true: needs platform:aws.region us-east-1"):
        parse_config(raw, keys, "stacks/Pulumi.prod.yaml")


@pytest.mark.parametrize("stack", STACKS)
def test_on_call_thresholds_reach_the_alert_topics_through_a_budget_of_their_own(plans, stack):
    plan, config = plans[stack], load_stack_config(stack, ROOT)
    budgets = _by_name(plan, "aws:budgets/budget:Budget")
    oncall, finance = budgets["cost-monthly-oncall"], budgets["cost-monthly"]
    for key in ("limitAmount", "costFilters", "timeUnit", "budgetType"):
        assert oncall[key] == finance[key]  # the same spend, measured the same way
    topics = {r.name.removeprefix("alerting-"): r.urn for r in plan.of_type("aws:sns/topic:Topic") if r.name.startswith("alerting-")}
    [resource] = [r for r in plan.of_type("aws:budgets/budget:Budget") if r.name == "cost-monthly-oncall"]
    expected = {(t.spend.upper(), t.percent, SEVERITY_TOPICS[t.severity]) for t in config.alerting.budget_thresholds}
    assert {(n["notificationType"], n["threshold"]) for n in oncall["notifications"]} == {e[:2] for e in expected}
    assert {topics[topic] for *_, topic in expected} <= set(resource.dependencies["notifications"])


def test_budgets_may_publish_to_the_encrypted_alert_topics():
    key = json.loads(alarm_topic_key_policy("111122223333"))
    topic = json.loads(alarm_topic_policy("arn:aws:sns:us-east-1:111122223333:page", "111122223333"))
    for policy in (key, topic):
        [allow] = [s for s in policy["Statement"] if s["Effect"] == "Allow" and "Service" in s["Principal"]]
        assert "budgets.amazonaws.com" in allow["Principal"]["Service"]
        assert allow["Condition"] == {"StringEquals": {"aws:SourceAccount": "111122223333"}}


def test_on_call_thresholds_are_one_notification_each():
    thresholds = [BudgetThresholdConfig(percent=100), BudgetThresholdConfig(percent=90, spend="forecasted", severity="critical")]
    notifications = alert_notifications(thresholds, {"warning": "ticket-arn", "critical": "page-arn"})
    assert [(n["notification_type"], n["threshold"], n["subscriber_sns_topic_arns"]) for n in notifications] == [
        ("ACTUAL", 100, ["ticket-arn"]), ("FORECASTED", 90, ["page-arn"])]
    with pytest.raises(ValueError, match="same spend and percent twice"):
        AlertingConfig(budget_thresholds=[{"percent": 80}, {"percent": 80, "severity": "critical"}])
    with pytest.raises(ValueError, match="at most 5"):
        AlertingConfig(budget_thresholds=[{"percent": p} for p in range(10, 70, 10)])


@mock_aws
def test_aws_budgets_accepts_both_budgets_notifications():
    """Both budgets' notifications, as the Budgets API takes them (botocore validates the shapes), created on
    moto and read back."""
    config = CostConfig(monthly_budget_usd=400)
    client = boto3.client("budgets", region_name="us-east-1")
    account = boto3.client("sts", region_name="us-east-1").get_caller_identity()["Account"]
    topics = {"warning": "arn:aws:sns:us-east-1:123456789012:ticket", "critical": "arn:aws:sns:us-east-1:123456789012:page"}
    for name, notifications in (("finance", budget_notifications(config, "arn:aws:sns:us-east-1:123456789012:finance")),
                                ("oncall", alert_notifications(AlertingConfig().budget_thresholds, topics))):  # fmt: skip
        client.create_budget(
            AccountId=account,
            Budget={"BudgetName": name, "BudgetLimit": {"Amount": "400", "Unit": "USD"}, "TimeUnit": "MONTHLY",
                    "BudgetType": "COST"},
            NotificationsWithSubscribers=[{
                "Notification": {"NotificationType": n["notification_type"], "ComparisonOperator": n["comparison_operator"],
                                 "Threshold": float(n["threshold"]), "ThresholdType": n["threshold_type"]},
                "Subscribers": [{"SubscriptionType": "SNS", "Address": arn} for arn in n["subscriber_sns_topic_arns"]],
            } for n in notifications],
        )  # fmt: skip
        stored = client.describe_notifications_for_budget(AccountId=account, BudgetName=name)["Notifications"]
        assert sorted((n["NotificationType"], n["Threshold"]) for n in stored) == sorted(
            (n["notification_type"], float(n["threshold"])) for n in notifications)
    # (moto stores no subscribers to read back: which topic each goes to is checked on the plan above)

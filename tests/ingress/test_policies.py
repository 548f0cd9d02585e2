"""The entry's decisions: the vendored controller policy, the WAF rules (on moto), the body-size regex."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from components.config import WafConfig
from components.ingress import policies

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "npm"


def _published_policy() -> dict:
    """The policy file in AWS's own npm package (npm verifies the tarball's registry integrity)."""
    package, version, member = policies.CONTROLLER_POLICY_SOURCE
    tarball = CACHE / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is missing: `make` installs nodejs (Makefile)")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "pack", f"{package}@{version}", "--pack-destination", str(CACHE)], check=True,
                       capture_output=True, timeout=300)  # fmt: skip
    with tarfile.open(tarball) as archive:
        return json.load(io.TextIOWrapper(archive.extractfile(member), encoding="utf-8"))


def test_the_controller_policy_is_the_one_aws_publishes():
    assert json.loads(policies.controller_policy()) == _published_policy()
    assert policies.CONTROLLER_APP_VERSION in policies.CONTROLLER_POLICY.name


@given(limit=st.integers(1, 10**9), value=st.integers(0, 10**12), zeros=st.integers(0, 3))
def test_the_body_regex_matches_exactly_the_lengths_above_the_limit(limit, value, zeros):
    pattern = re.compile(policies.greater_than_regex(limit))
    assert bool(pattern.fullmatch("0" * zeros + str(value))) == (value > limit)


@pytest.mark.parametrize("limit", [1024, 1_000_000, 9_999_999, 100_000_000])
def test_the_body_regex_edges_and_wafs_length_limit(limit):
    pattern = re.compile(policies.greater_than_regex(limit))
    assert not pattern.fullmatch(str(limit)) and pattern.fullmatch(str(limit + 1))
    assert not pattern.fullmatch("") and not pattern.fullmatch("12a") and not pattern.fullmatch("-5")
    assert len(policies.greater_than_regex(limit)) <= 512  # WAF's RegexString limit


def test_rule_order_and_the_long_prompt_exception():
    rules = policies.waf_rules(WafConfig(), 1_000_000, "p")
    assert [r["Name"] for r in rules] == ["AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                                          "AWSManagedRulesAmazonIpReputationList", "body-too-large", "rate-per-ip"]  # fmt: skip
    assert [r["Priority"] for r in rules] == list(range(5))
    common = rules[0]["Statement"]["ManagedRuleGroupStatement"]
    # CommonRuleSet blocks bodies over 8 KB: long prompts would be refused before the server's own limit.
    assert common["RuleActionOverrides"] == [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]
    assert "RuleActionOverrides" not in rules[1]["Statement"]["ManagedRuleGroupStatement"]
    assert rules[4]["Statement"]["RateBasedStatement"] == {"Limit": 2000, "AggregateKeyType": "IP", "EvaluationWindowSec": 300}
    assert all(r["VisibilityConfig"]["CloudWatchMetricsEnabled"] for r in rules)  # blocked requests counted per rule


@mock_aws
def test_wafv2_accepts_the_web_acl():
    """botocore validates every field of CreateWebACL; moto stores the rules and returns them."""
    client = boto3.client("wafv2", region_name="us-east-1")
    rules = policies.waf_rules(WafConfig(rate_limit_per_5_minutes=500), 1_000_000, "gpu-dev")
    summary = client.create_web_acl(
        Name="gpu-dev-inference", Scope="REGIONAL", DefaultAction={"Allow": {}}, Rules=rules,
        VisibilityConfig={"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": "gpu-dev"},
    )["Summary"]  # fmt: skip
    stored = client.get_web_acl(Name="gpu-dev-inference", Scope="REGIONAL", Id=summary["Id"])["WebACL"]["Rules"]
    assert [r["Name"] for r in stored] == [r["Name"] for r in rules]
    assert stored[3]["Statement"]["RegexMatchStatement"]["RegexString"] == policies.greater_than_regex(1_000_000)


def test_pulumi_names_follow_the_provider():
    converted = policies.to_pulumi(policies.waf_rules(WafConfig(), 4096, "p"))
    assert converted[0]["visibility_config"]["cloudwatch_metrics_enabled"] is True
    assert converted[0]["statement"]["managed_rule_group_statement"]["rule_action_overrides"][0]["action_to_use"] == {"count": {}}
    assert converted[3]["statement"]["regex_match_statement"]["text_transformations"] == [{"priority": 0, "type": "NONE"}]
    assert converted[4]["statement"]["rate_based_statement"]["evaluation_window_sec"] == 300

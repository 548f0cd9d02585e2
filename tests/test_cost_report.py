"""`platformctl cost report` against moto's Cost Explorer (results injected through moto's API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import boto3
import pytest
import requests
from botocore.stub import Stubber
from moto import mock_aws

from components.cost.report import (
    UNTAGGED,
    ReportError,
    add_forecast,
    build_report,
    cost_explorer,
    period_bounds,
    to_chart,
    to_csv,
    to_markdown,
    to_xlsx,
)

PRICES = {"g6.xlarge": 0.8048, "g5.xlarge": 1.006}
TODAY = date(2026, 11, 22)


def _group(keys: list[str], amortized: float, unblended: float) -> dict:
    return {"Keys": keys, "Metrics": {"AmortizedCost": {"Amount": str(amortized), "Unit": "USD"},
                                      "UnblendedCost": {"Amount": str(unblended), "Unit": "USD"}}}  # fmt: skip


def _day(start: str, end: str, groups: list[dict]) -> dict:
    return {"TimePeriod": {"Start": start, "End": end}, "Total": {}, "Groups": groups, "Estimated": False}


def _usage_group(purchase: str, instance: str, cost: float, hours: float) -> dict:
    return {"Keys": [purchase, instance], "Metrics": {"UnblendedCost": {"Amount": str(cost), "Unit": "USD"},
                                                     "UsageQuantity": {"Amount": str(hours), "Unit": "Hrs"}}}  # fmt: skip


TAG_PAGE_1 = {"ResultsByTime": [_day("2026-10-01", "2026-10-02", [
    _group(["environment$prod", "component$gpu"], 100.0, 110.0),
    _group(["environment$prod", "component$"], 7.5, 7.5),  # spend without the component tag
])], "NextPageToken": "page-2"}  # fmt: skip
TAG_PAGE_2 = {"ResultsByTime": [_day("2026-10-02", "2026-10-03", [
    _group(["environment$prod", "component$gpu"], 90.0, 95.0),
    _group(["environment$dev", "component$network"], 5.0, 5.0),
])]}  # fmt: skip
PURCHASE = {"ResultsByTime": [_day("2026-10-01", "2026-11-01", [
    _usage_group("On Demand Instances", "m7i.large", 50.0, 500.0),
    _usage_group("Spot Instances", "g6.xlarge", 80.0, 250.0),
    _usage_group("Spot Instances", "g5.xlarge", 40.0, 100.0),
    _usage_group("Spot Instances", "x9.mystery", 1.0, 1.0),
])]}  # fmt: skip


@pytest.fixture
def ce():
    with mock_aws():
        response = requests.post("http://motoapi.amazonaws.com/moto-api/static/ce/cost-and-usage-results",
                                 json={"results": [TAG_PAGE_1, TAG_PAGE_2, PURCHASE]}, timeout=10)  # fmt: skip
        assert response.status_code == 201
        yield cost_explorer()


def test_every_page_is_read_grouped_by_tag_and_untagged_spend_kept(ce):
    ledger = {"prod": {"totalMonthlyUsd": 3429.35, "revision": "abc1234def", "recordedAt": "2026-10-01T00:00:00Z"}}
    report = build_report(ce, "2026-10", ["environment", "component"], "DAILY", PRICES, ledger, today=TODAY)
    assert len(report.rows) == 4  # both pages
    assert {(r["environment"], r["component"]) for r in report.rows} == {
        ("prod", "gpu"), ("prod", UNTAGGED), ("dev", "network")}
    assert report.totals == {"AmortizedCost": 202.5, "UnblendedCost": 217.5}
    assert report.by_purchase_type == {"On Demand Instances": 50.0, "Spot Instances": 121.0}
    savings = report.spot_savings
    assert savings["onDemandCost"] == round(250 * 0.8048 + 100 * 1.006, 2) and savings["spotCost"] == 120.0
    assert savings["saved"] == round(250 * 0.8048 + 100 * 1.006 - 120, 2)
    assert savings["typesWithoutOnDemandPrice"] == ["x9.mystery"]  # reported, not guessed
    [prod] = report.estimate_vs_actual
    assert (prod["stack"], prod["estimatedMonthly"], prod["actual"]) == ("prod", 3429.35, 212.5)


def test_formats_carry_the_same_numbers(ce, tmp_path):
    report = build_report(ce, "2026-10", ["environment", "component"], "DAILY", PRICES, today=TODAY)
    rows = to_csv(report).splitlines()
    assert rows[0] == "date,environment,component,AmortizedCost,UnblendedCost" and len(rows) == 5
    assert "| prod | gpu | 190.00 | 205.00 |" in to_markdown(report)
    assert "| prod | (untagged) | 7.50 | 7.50 |" in to_markdown(report)
    from openpyxl import load_workbook

    to_xlsx(report, tmp_path / "r.xlsx")
    book = load_workbook(tmp_path / "r.xlsx")
    assert book.sheetnames == ["Summary", "By environment+component", "By day", "Savings"]
    assert book["Summary"]["B3"].value == 217.5
    assert [c.value for c in book["Savings"][2]][:2] == ["g5.xlarge", 100.0]
    to_chart(report, tmp_path / "spend.png", "component")
    assert (tmp_path / "spend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forecast_uses_the_rest_of_the_month():
    client = boto3.client("ce", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    from components.cost.report import Report

    report = Report("2026-11", "DAILY", ["environment"], [], {}, {}, {"onDemandCost": 0})
    with Stubber(client) as stub:
        stub.add_response("get_cost_forecast", {"Total": {"Amount": "1234.5", "Unit": "USD"}, "ForecastResultsByTime": []},
                          {"TimePeriod": {"Start": "2026-11-22", "End": "2026-12-01"}, "Metric": "UNBLENDED_COST",
                           "Granularity": "MONTHLY"})  # fmt: skip
        add_forecast(client, report, TODAY)
    assert report.forecast == {"from": "2026-11-22", "to": "2026-12-01", "unblendedCost": 1234.5}
    past = Report("2026-10", "DAILY", ["environment"], [], {}, {}, {"onDemandCost": 0})
    add_forecast(client, past, TODAY)  # no call: the month is over
    assert past.forecast is None


def test_bad_periods_and_missing_permissions_are_clear():
    for bad in ("2026-13", "October", "2026-1"):
        with pytest.raises(ReportError, match="expected a month as YYYY-MM"):
            period_bounds(bad, TODAY)
    with pytest.raises(ReportError, match="has not started"):
        period_bounds("2027-01", TODAY)
    assert period_bounds("2026-02", TODAY) == ("2026-02-01", "2026-03-01")
    client = boto3.client("ce", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("get_cost_and_usage", "AccessDeniedException", "not allowed")
        with pytest.raises(ReportError, match="needs ce:GetCostAndUsage"):
            build_report(client, "2026-10", ["environment"], today=TODAY)
    with pytest.raises(ReportError, match="one or two tag keys"):
        build_report(client, "2026-10", ["a", "b", "c"], today=TODAY)


def test_throttling_is_retried_by_botocore_with_backoff():
    config = cost_explorer().meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 11}  # 10 retries after the first call


def test_the_cli_refuses_a_bad_period_with_exit_2():
    platformctl = str(Path(sys.executable).parent / "platformctl")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([platformctl, "cost", "report", "--period", "2026-13", "--no-forecast"],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "--period '2026-13': expected a month as YYYY-MM" in result.stderr
    result = subprocess.run([platformctl, "cost", "report", "--period", "2026-10", "--format", "xlsx"],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "--format xlsx needs --output" in result.stderr


def test_json_report_is_complete(ce):
    report = build_report(ce, "2026-10", ["environment", "component"], "DAILY", PRICES, today=TODAY)
    data = json.loads(json.dumps(report.to_json()))
    assert set(data) >= {"period", "rows", "totals", "by_purchase_type", "spot_savings", "estimate_vs_actual"}

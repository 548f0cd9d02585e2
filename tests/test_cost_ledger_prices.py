"""The deploy-time ledger (on moto's S3) and the catalog refresh (Price List API, stubbed)."""

from __future__ import annotations

import copy
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from components.cost.estimate import load_catalog
from components.cost.ledger import ledger_key, read_ledger, record
from components.cost.prices import PriceError, product_filters, refresh_instances

ESTIMATE = {"stack": "prod", "total_monthly": 3429.35, "components": {"gpu": 1907.65, "network": 432.1},
            "lines": [{"component": "gpu", "resource": "gpu-reserved", "type": "t", "monthly_usd": 1.0, "detail": ""}],
            "unpriced": [], "assumptions": {"catalog": {"version": "2026-11-22"}}}  # fmt: skip


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="ledger")
        yield client


def test_each_deployment_is_recorded_with_stack_revision_time_and_components(s3):
    first = record(s3, "ledger", ESTIMATE, "abc1234", recorded_at=1_790_000_000)
    later = {**ESTIMATE, "total_monthly": 3500.0}
    second = record(s3, "ledger", later, "def5678", recorded_at=1_790_086_400)
    assert first == "ledger/prod/2026-09-21T14-13-20Z-abc1234.json"
    entries = read_ledger(s3, "ledger", "prod")
    assert [(e["revision"], e["totalMonthlyUsd"]) for e in entries] == [("abc1234", 3429.35), ("def5678", 3500.0)]
    assert entries[0]["components"] == {"gpu": 1907.65, "network": 432.1}
    assert entries[0]["recordedAt"] == "2026-09-21T14:13:20Z" and second != first


def test_the_ledger_never_overwrites_an_entry(s3):
    record(s3, "ledger", ESTIMATE, "abc1234", recorded_at=1_790_000_000)
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        record(s3, "ledger", {**ESTIMATE, "total_monthly": 1.0}, "abc1234", recorded_at=1_790_000_000)
    [entry] = read_ledger(s3, "ledger", "prod")
    assert entry["totalMonthlyUsd"] == 3429.35


def test_ledger_keys_refuse_odd_names():
    with pytest.raises(ValueError):
        ledger_key("../prod", "abc1234", 0)
    with pytest.raises(ValueError):
        ledger_key("prod", "not-a-sha", 0)


def _price_item(usd: str) -> str:
    return json.dumps({"product": {"sku": "SKU1", "attributes": {"instanceType": "x"}}, "terms": {"OnDemand": {
        "SKU1.JRTCKXETXF": {"priceDimensions": {"SKU1.JRTCKXETXF.6YS6EN2CT7": {
            "unit": "Hrs", "pricePerUnit": {"USD": usd}, "description": "per On Demand Linux instance hour"}}}}}})  # fmt: skip


def test_refresh_updates_every_instance_price_from_the_price_list_api():
    catalog = copy.deepcopy(load_catalog())
    pricing = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(pricing) as stub:
        for instance_type in catalog["instances"]:
            new = "0.5000000000" if instance_type == "g6.xlarge" else str(catalog["instances"][instance_type]["usdPerHour"])
            stub.add_response("get_products", {"PriceList": [_price_item(new)], "FormatVersion": "aws_v1"},
                              {"ServiceCode": "AmazonEC2", "Filters": product_filters(instance_type, "us-east-1"),
                               "FormatVersion": "aws_v1", "MaxResults": 10})  # fmt: skip
        changes = refresh_instances(pricing, catalog, today="2026-12-01")
        stub.assert_no_pending_responses()
    assert changes["g6.xlarge"] == (0.8048, 0.5)
    assert catalog["instances"]["g6.xlarge"] == {"usdPerHour": 0.5, "source": "AWS Price List API (pricing.get_products)",
                                                  "date": "2026-12-01"}  # fmt: skip
    assert catalog["version"] == "2026-12-01"
    filters = {f["Field"]: f["Value"] for f in product_filters("g6.xlarge", "us-east-1")}
    assert filters == {"instanceType": "g6.xlarge", "regionCode": "us-east-1", "operatingSystem": "Linux",
                       "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used", "marketoption": "OnDemand"}


def test_refresh_refuses_missing_or_ambiguous_prices_and_names_the_type():
    catalog = copy.deepcopy(load_catalog())
    first = next(iter(catalog["instances"]))
    pricing = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(pricing) as stub:
        stub.add_response("get_products", {"PriceList": []})
        with pytest.raises(PriceError, match=f"{first} in us-east-1: the Price List API returned no"):
            refresh_instances(pricing, catalog)
    with Stubber(pricing) as stub:
        stub.add_response("get_products", {"PriceList": [_price_item("1.0"), _price_item("2.0")]})
        with pytest.raises(PriceError, match="ambiguous prices"):
            refresh_instances(pricing, catalog)

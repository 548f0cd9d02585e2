"""The offline cost estimate: prices from the catalog, usage from the usage file, nothing hidden."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.cost.estimate import (
    FREE_TYPES,
    REQUEST_PRICED,
    Usage,
    UsageError,
    compare,
    estimate,
    load_catalog,
    load_usage,
    markdown,
)
from platformctl.cost import README_BEGIN, README_END, readme_block

from .conftest import ROOT, STACKS

CATALOG = load_catalog()
PLATFORMCTL = str(Path(sys.executable).parent / "platformctl")


@pytest.fixture(scope="module")
def plan_json(plans):
    return {stack: plan.to_json() for stack, plan in plans.items()}


def _usage(stack: str) -> Usage:
    return load_usage(ROOT / "stacks" / "usage" / f"{stack}.yaml")


def test_catalog_entries_name_region_unit_source_and_date():
    assert CATALOG["region"] == "us-east-1" and CATALOG["hoursPerMonth"] == 730
    for name, entry in CATALOG["instances"].items():
        assert entry["usdPerHour"] > 0 and entry["source"] and entry["date"], name
    for name, entry in CATALOG["items"].items():
        assert entry["usd"] > 0 and entry["unit"] and entry["source"] and entry["date"], name
    # the seed facts the issue gives
    assert CATALOG["instances"]["g6.xlarge"]["usdPerHour"] == 0.8048
    assert CATALOG["items"]["s3-DEEP_ARCHIVE-gb-month"]["usd"] == 0.00099


def test_prod_gpu_base_and_burst_are_priced_by_market(plan_json):
    result = estimate(plan_json["prod"], CATALOG, _usage("prod"))
    lines = {(line.resource, line.type): line for line in result.lines}
    reservation = lines[("gpu-reserved", "aws:ec2/capacityReservation:CapacityReservation")]
    assert reservation.monthly_usd == round(2 * 0.9776 * 730, 2)  # billed used or not
    assert "fully used by the reserved pool" in reservation.detail
    reserved_pool = lines[("gpu-reserved", "aws:autoscaling/group:Group")]
    assert reserved_pool.monthly_usd == round(2 * 200 * 0.08, 2)  # compute is in the reservation
    spot = lines[("gpu-spot", "aws:autoscaling/group:Group")]
    mean = (0.9776 + 1.212 + 2.24208) / 3
    assert spot.monthly_usd == round(mean * 0.4 * 730 + 200 * 0.08, 2)
    saving = result.savings["gpu-spot"]
    assert saving["onDemandMonthly"] == round(mean * 730, 2) and saving["spotMonthly"] == round(mean * 0.4 * 730, 2)
    assert lines[("eks-cluster", "aws:eks/cluster:Cluster")].monthly_usd == 73.0
    system = lines[("eks-system", "aws:eks/nodeGroup:NodeGroup")]
    assert system.monthly_usd == round(3 * (0.1008 * 730 + 50 * 0.08), 2)
    nats = [line for line in result.lines if line.type == "aws:ec2/natGateway:NatGateway"]
    assert len(nats) == 3 and all(n.monthly_usd == round(0.045 * 730 + 1000 * 0.045, 2) for n in nats)


def test_unused_reservation_hours_are_reported():
    plan = {"stack": "x", "resources": [
        {"urn": "c", "type": "platform:gpu:CapacityPool", "name": "gpu", "custom": False, "parent": None, "inputs": {},
         "outputs": {"capacityFacts": [{"pool": "gpu-reserved", "market": "reserved", "instanceTypes": ["g6.xlarge"],
                                         "desiredSize": 1, "reservedCount": 3, "rootVolumeGib": 100}]}},
        {"urn": "r", "type": "aws:ec2/capacityReservation:CapacityReservation", "name": "gpu-reserved", "custom": True,
         "parent": "c", "inputs": {"instanceType": "g6.xlarge", "instanceCount": 3}},
    ]}  # fmt: skip
    [line] = estimate(plan, CATALOG, Usage()).lines
    assert line.monthly_usd == round(3 * 0.8048 * 730, 2)
    assert "2 reserved instance(s) unused, still billed" in line.detail


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_is_priced_free_or_listed(plan_json, stack):
    result = estimate(plan_json[stack], CATALOG, _usage(stack))
    priced = {(line.resource, line.type) for line in result.lines}
    listed = {(item["resource"], item["type"]) for item in result.unpriced}
    for resource in plan_json[stack]["resources"]:
        kind = resource["type"]
        if not resource["custom"] or kind.startswith(("pulumi:providers:", "kubernetes:")) or kind in FREE_TYPES:
            continue
        assert (resource["name"], kind) in priced | listed, f"{stack}: {resource['name']} ({kind}) silently dropped"
    assert {item["type"] for item in result.unpriced} <= REQUEST_PRICED
    assert result.total_monthly == round(sum(line.monthly_usd for line in result.lines), 2)
    assert round(sum(result.components.values()), 2) == result.total_monthly


def test_an_unknown_type_is_listed_not_zero():
    plan = {"stack": "x", "resources": [{"urn": "u", "type": "aws:rds/instance:Instance", "name": "db", "custom": True,
                                          "parent": None, "inputs": {}}]}  # fmt: skip
    result = estimate(plan, CATALOG, Usage())
    assert result.total_monthly == 0 and result.unpriced == [
        {"component": "(stack)", "resource": "db", "type": "aws:rds/instance:Instance", "reason": "no price in the catalog"}
    ]


def test_missing_usage_is_reported(plan_json):
    result = estimate(plan_json["prod"], CATALOG, Usage())
    assert "mirror-store: s3.mirror-store (GB per storage class)" in result.usage_missing
    assert "mirror-cdn: cloudfrontGbOut" in result.usage_missing


def test_a_bad_usage_file_names_the_file_and_key(tmp_path):
    bad = tmp_path / "prod.yaml"
    bad.write_text("spotDiscount: 1.5\nnatGbb: 3\n")
    with pytest.raises(UsageError) as caught:
        load_usage(bad)
    assert str(bad) in str(caught.value) and "spotDiscount" in str(caught.value) and "natGbb" in str(caught.value)
    bucket = tmp_path / "s3.yaml"
    bucket.write_text("s3: {mirror-store: {GLACIER_FLEXIBLE: 10}}\n")
    plan = {"stack": "x", "resources": [{"urn": "b", "type": "aws:s3/bucket:Bucket", "name": "mirror-store",
                                          "custom": True, "parent": None, "inputs": {}}]}  # fmt: skip
    with pytest.raises(UsageError, match="usage s3.mirror-store: no price for storage class GLACIER_FLEXIBLE"):
        estimate(plan, CATALOG, load_usage(bucket))


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 10_000), st.floats(0, 10_000), st.floats(0, 0.95), st.floats(0, 0.95))
def test_more_usage_never_costs_less_and_a_bigger_spot_discount_never_costs_more(nat, cdn, low, high):
    plan = _PROD_PLAN
    low, high = sorted((low, high))
    base = estimate(plan, CATALOG, Usage(nat_gb=nat, cloudfront_gb_out=cdn, spot_discount=low)).total_monthly
    more = estimate(plan, CATALOG, Usage(nat_gb=nat + 1, cloudfront_gb_out=cdn + 1, spot_discount=low)).total_monthly
    cheaper_spot = estimate(plan, CATALOG, Usage(nat_gb=nat, cloudfront_gb_out=cdn, spot_discount=high)).total_monthly
    assert more >= base >= cheaper_spot


_PROD_PLAN: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _prod_plan_for_properties(plan_json):
    _PROD_PLAN.update(plan_json["prod"])


def test_compare_and_markdown_show_the_delta_per_component(plan_json):
    head_plan = plan_json["prod"]
    base_plan = copy.deepcopy(head_plan)
    nat = next(r for r in base_plan["resources"] if r["type"] == "aws:ec2/natGateway:NatGateway")
    base_plan["resources"].append({**nat, "urn": nat["urn"] + "-extra", "name": nat["name"] + "-extra"})
    head, base = estimate(head_plan, CATALOG, _usage("prod")), estimate(base_plan, CATALOG, _usage("prod"))
    diff = compare(head, base)
    network = next(row for row in diff["components"] if row["component"] == "network")
    assert network["delta"] < 0 and diff["delta"] == network["delta"]
    text = markdown(head, diff)
    assert f"| network | ${network['base']:,.2f} | ${network['head']:,.2f} | -${abs(network['delta']):,.2f} |" in text
    assert "Change against the base: **-$" in text
    assert "Spot saving in `gpu-spot`" in text


def test_the_readme_estimates_are_current():
    text = (ROOT / "README.md").read_text()
    current = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert current == readme_block().strip(), "run `make docs` to regenerate the README's cost estimates"


def test_the_cli_writes_json_and_refuses_a_bad_base(tmp_path):
    env = {**os.environ, "PLATFORM_IMAGE_REVISION": "0123456"}
    out = tmp_path / "prod.json"
    result = subprocess.run([PLATFORMCTL, "cost", "estimate", "--stack", "prod", "--format", "json", "--output", str(out)],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["total_monthly"] > 0 and data["currency"] == "USD" and data["components"]["gpu"] > 0
    assert data["lines"] and data["assumptions"]["catalog"]["version"] == CATALOG["version"]
    bad = tmp_path / "base.json"
    bad.write_text("{not json")
    result = subprocess.run([PLATFORMCTL, "cost", "estimate", "--stack", "dev", "--compare-to", str(bad)],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 2 and f"--compare-to {bad}: not a readable plan JSON" in result.stderr


def test_tiered_buckets_are_priced_at_their_lifecycle_steady_state(plan_json):
    """The seeds' 10 GB of logs a day in prod, spread by the logs bucket's own rules in the plan."""
    result = estimate(plan_json["prod"], CATALOG, _usage("prod"))
    assert result.assumptions["tieredBucketsSteadyStateGb"]["storage-logs"] == {
        "STANDARD": 300.0, "STANDARD_IA": 600.0, "GLACIER_IR": 900.0, "DEEP_ARCHIVE": 5500.0}  # fmt: skip
    [logs] = [line for line in result.lines if line.resource == "storage-logs" and line.type.endswith("Bucket")]
    assert logs.monthly_usd == 23.45
    streams = {line.resource: line for line in result.lines if line.type.endswith("FirehoseDeliveryStream")}
    assert streams["storage-logs"].monthly_usd == round(10 * CATALOG["hoursPerMonth"] / 24 * 0.049, 2)
    assert streams["storage-audit-stream"].monthly_usd == round(0.1 * CATALOG["hoursPerMonth"] / 24 * 0.049, 2)
    # No daily volume: the bucket is listed as missing usage, not guessed.
    bare = estimate(plan_json["prod"], CATALOG, _usage("prod").model_copy(update={"s3_daily_gb": {}}))
    assert "storage-logs: s3.storage-logs (GB per storage class)" in bare.usage_missing

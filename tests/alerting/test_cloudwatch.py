"""AWS-side CloudWatch alarms in every stack's plan: each signal alarmed, each alarm to its severity's topic."""

from __future__ import annotations

import dataclasses

import pytest

from components.alerting import SEVERITY_TOPICS, cloudwatch
from platformctl.common import load_stack_config
from platformctl.offline import run_offline_plan

from ..conftest import ROOT, STACKS

EXAMPLES = ROOT / "examples" / "stacks"


@pytest.fixture(scope="module")
def every_plan(plans, project):
    return {**plans, "hybrid": run_offline_plan(dataclasses.replace(project, stack_config_dir=EXAMPLES), "hybrid")}


@pytest.mark.parametrize("stack", [*STACKS, "hybrid"])
def test_every_alarm_goes_to_the_topic_of_its_severity(every_plan, stack):
    plan = every_plan[stack]
    topics = {r.name.removeprefix("alerting-"): r.urn for r in plan.of_type("aws:sns/topic:Topic") if r.name.startswith("alerting-")}
    alarms = plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert alarms
    for alarm in alarms:
        severity = alarm.inputs["tags"]["severity"]
        assert alarm.inputs["alarmDescription"].startswith(f"[{severity}]")
        assert alarm.dependencies["alarmActions"] == [topics[SEVERITY_TOPICS[severity]]], alarm.name


@pytest.mark.parametrize("stack", [*STACKS, "hybrid"])
def test_each_aws_side_signal_has_its_alarm(every_plan, stack):
    plan = every_plan[stack]
    config = load_stack_config(stack, ROOT, EXAMPLES if stack == "hybrid" else None)
    names = {alarm.name for alarm in plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    nat_azs = config.network.availability_zones if config.nat_gateway_mode == "perAz" else config.network.availability_zones[:1]
    expected = {f"network-nat-{az}-{kind}" for az in nat_azs for kind in ("port-allocation", "packets-dropped")}
    expected |= {"storage-firehose-delivery-failing", "storage-firehose-data-stale", "gpu-spot-interruptions"}
    if config.mirror is not None:
        expected.add("mirror-cdn-5xx-rate")
    if config.failover is not None:
        expected |= {"failover-a-status-check", "failover-b-status-check"}
    if config.vpn is not None:
        expected |= {"vpn-tunnel1-down", "vpn-tunnel2-down", "vpn-both-tunnels-down"}
    assert expected <= names
    nat = next(a for a in plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if a.name.endswith("port-allocation"))
    assert (nat.inputs["namespace"], nat.inputs["metricName"], nat.inputs["threshold"]) == (
        "AWS/NATGateway", "ErrorPortAllocation", 0)
    assert any(urn.endswith("NatGateway::" + nat.name.removesuffix("-port-allocation")) for urn in nat.dependencies["dimensions"])


def test_cloudfront_alarms_read_the_global_region_dimension():
    [alarm] = cloudwatch.cloudfront_alarms("E123", 1.0)
    assert alarm.dimensions == {"DistributionId": "E123", "Region": "Global"} and alarm.metric == "5xxErrorRate"


@pytest.mark.parametrize("interval, freshness", [(60, 900), (300, 900), (600, 1800), (900, 2700)])
def test_firehose_staleness_allows_three_buffer_intervals(interval, freshness):
    stale = next(a for a in cloudwatch.firehose_alarms("s", interval) if a.name == "firehose-data-stale")
    assert stale.threshold == freshness


@pytest.mark.parametrize("stack", STACKS)
def test_spot_interruptions_are_counted_on_the_handlers_queue(plans, stack):
    plan = plans[stack]
    [alarm] = [a for a in plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if a.name == "gpu-spot-interruptions"]
    limit = load_stack_config(stack, ROOT).alerting.thresholds.spot_interruptions_per_hour
    assert (alarm.inputs["namespace"], alarm.inputs["metricName"], alarm.inputs["period"]) == ("AWS/SQS", "NumberOfMessagesSent", 3600)
    assert alarm.inputs["threshold"] == limit and alarm.inputs["name"] == f"platform-{stack}-spot-interruptions"
    assert alarm.dependencies["dimensions"][0].endswith("Queue::gpu-interruptions")

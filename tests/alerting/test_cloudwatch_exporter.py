"""The CloudWatch exporter (YACE): series names, its config in every stack, and the alerts over it.

No YACE binary runs here. Series names come from a port of YACE's ``BuildMetricName``, pinned
to the names YACE's README shows; the alerts and dashboards may read only what the declared
jobs export, and each alert mirrors a CloudWatch alarm of its component.
"""

from __future__ import annotations

import json
import re

import pulumi
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from components.alerting import cloudwatch_exporter as yace
from components.alerting import monitoring
from components.alerting.cloudwatch import spot_interruption_alarms, spot_interruption_signals
from components.alerting.rules import CLOUDWATCH_ORIGIN, referenced_metrics
from components.failover import policies as failover
from components.vpn import alarms as vpn
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS


@pytest.mark.parametrize(("namespace", "metric", "stat", "name"), [
    # YACE README, "Metrics Examples" and "Query Examples"
    ("AWS/EC2", "CPUUtilization", "Maximum", "aws_ec2_cpuutilization_maximum"),
    ("AWS/ES", "FreeStorageSpace", "Sum", "aws_es_free_storage_space_sum"),
    ("AWS/ELB", "HTTPCode_Backend_4XX", "Sum", "aws_elb_httpcode_backend_4_xx_sum"),
    ("AWS/ELB", "RequestCount", "Sum", "aws_elb_request_count_sum"),
    # The namespace's parts come off the front of the metric name (YACE's Glue comment) ...
    ("Glue", "glue.driver.aggregate.bytesRead", "Sum", "aws_glue_driver_aggregate_bytes_read_sum"),
    # ... which is why the pair's Failover counter is not exported under a readable name.
    ("Platform/Failover", "Failover", "Sum", "aws_platform_failover__sum"),
    ("Platform/Failover", "IsMaster", "Maximum", "aws_platform_failover_is_master_maximum"),
    ("AWS/VPN", "TunnelState", "Maximum", "aws_vpn_tunnel_state_maximum"),
])  # fmt: skip
def test_series_names_follow_yace(namespace, metric, stat, name):
    assert yace.prometheus_name(namespace, metric, stat) == name


@given(st.from_regex(r"[A-Z][A-Za-z0-9]{0,15}(/[A-Z][A-Za-z0-9]{0,15})?", fullmatch=True),
       st.from_regex(r"[A-Za-z][A-Za-z0-9.%_-]{0,30}", fullmatch=True),
       st.sampled_from(["Maximum", "Minimum", "Sum", "Average", "SampleCount", "p99"]))  # fmt: skip
def test_every_exported_name_is_a_valid_prometheus_name(namespace, metric, stat):
    assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", yace.prometheus_name(namespace, metric, stat))


def test_the_config_has_one_static_job_per_node_and_tunnel_with_exact_dimensions():
    jobs = [*failover.exporter_jobs("gpu-dev-session-store"), *vpn.exporter_jobs("gpu-dev", "vpn-0abc", ("1.1.1.1", "2.2.2.2"))]
    resolved = [(job, {key: str(value) for key, value in job.dimensions.items()}) for job in jobs]
    config = yaml.safe_load(yace.exporter_config("eu-west-1", resolved))
    assert config["apiVersion"] == "v1alpha1" and config["sts-region"] == "eu-west-1"
    by_name = {job["name"]: job for job in config["static"]}
    assert by_name["gpu-dev-session-store-b"]["dimensions"] == [{"name": "Pair", "value": "gpu-dev-session-store"},
                                                                {"name": "Node", "value": "b"}]  # fmt: skip
    assert by_name["gpu-dev-vpn-tunnel2"]["dimensions"] == [{"name": "VpnId", "value": "vpn-0abc"},
                                                            {"name": "TunnelIpAddress", "value": "2.2.2.2"}]  # fmt: skip
    for job in config["static"]:
        assert job["regions"] == ["eu-west-1"]
        for metric in job["metrics"]:
            # a silent series reads as 0 (down / not master), within two minutes
            assert metric["nilToZero"] is True and metric["period"] == 60 and metric["length"] == 120
            assert len(metric["statistics"]) == 1


@pulumi.runtime.test
def test_the_config_is_rendered_once_the_dimensions_are_known():
    jobs = [*failover.exporter_jobs("pair"), *vpn.exporter_jobs("p", pulumi.Output.from_input("vpn-9"),
                                                                 (pulumi.Output.from_input("3.3.3.3"), "4.4.4.4"))]

    def check(text: str) -> None:
        static = yaml.safe_load(text)["static"]
        assert [job["name"] for job in static] == ["pair-a", "pair-b", "p-vpn-tunnel1", "p-vpn-tunnel2"]
        assert static[2]["dimensions"] == [{"name": "VpnId", "value": "vpn-9"}, {"name": "TunnelIpAddress", "value": "3.3.3.3"}]
        assert static[3]["dimensions"][1] == {"name": "TunnelIpAddress", "value": "4.4.4.4"}

    return monitoring._exporter_config("us-east-1", jobs).apply(check)


def test_the_exporters_role_can_only_read_metrics():
    [statement] = json.loads(yace.reader_policy())["Statement"]
    assert statement["Effect"] == "Allow"
    assert all(action.split(":")[1].startswith(("Get", "List")) for action in statement["Action"])


@pytest.mark.parametrize("signals", [failover.exported_signals("pair", 5), vpn.exported_signals("p", "vpn-1", ("a", "b")),
                                     spot_interruption_signals("p", "q", 4)], ids=["failover", "vpn", "spot"])  # fmt: skip
def test_alerts_and_dashboards_read_only_what_their_jobs_export(signals):
    exported = signals.series()
    for alert in signals.alerts:
        assert referenced_metrics(alert.expr) <= exported, alert.name
    for _, _, expr, _ in signals.dashboard[2]:
        assert referenced_metrics(expr) <= exported, expr


def test_each_alert_mirrors_a_cloudwatch_alarm_of_its_component():
    failover_alarms = {spec.name: spec for spec in failover.alarm_specs(7.5)}
    for alert in failover.prometheus_alerts(7.5):
        assert alert.twins and all(failover_alarms[twin].severity == alert.severity for twin in alert.twins), alert.name
    assert failover_alarms["replication-lag"].threshold == 7.5
    assert "> 7.5" in next(a.expr for a in failover.prometheus_alerts(7.5) if a.name == "FailoverReplicationLagHigh")
    [spot_alarm] = spot_interruption_alarms("q", 4)
    [spot_alert] = spot_interruption_signals("p", "q", 4).alerts
    assert spot_alert.twins == (spot_alarm.name,) and spot_alert.severity == spot_alarm.severity
    assert spot_alert.expr.endswith(f"> {spot_alarm.threshold:g}")
    tunnel_alarms = {spec.name: spec for spec in vpn.tunnel_alarms()}
    for alert in vpn.prometheus_alerts():
        assert alert.twins and all(tunnel_alarms[twin].severity == alert.severity for twin in alert.twins), alert.name


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_exports_its_pair_and_tunnels_to_prometheus(plans, stack):
    plan, config = plans[stack], load_stack_config(stack, ROOT)
    releases = {r.name: r for r in plan.of_type("kubernetes:helm.sh/v3:Release")}
    release = releases["monitoring-cloudwatch-exporter"]
    assert (release.inputs["chart"], release.inputs["version"]) == (
        yace.CHART, config.alerting.prometheus.cloudwatch_exporter_chart_version)
    assert releases["monitoring-stack"].urn in release.depends_on  # its ServiceMonitor CRD
    values = release.inputs["values"]
    assert values["serviceMonitor"]["enabled"] is True
    # The jobs name the interruption queue, the VPN connection and its tunnels' addresses: known once they exist.
    assert values["config"] == "[unknown]"
    [queue] = [r for r in plan.of_type("aws:sqs/queue:Queue") if r.name == "gpu-interruptions"]
    assert queue.urn in release.dependencies["values"]
    if config.vpn is not None:
        [connection] = plan.of_type("aws:ec2/vpnConnection:VpnConnection")
        assert connection.urn in release.dependencies["values"]
    [role] = [r for r in plan.of_type("aws:iam/role:Role") if r.name == "monitoring-cloudwatch-exporter"]
    assert role.urn in release.dependencies["values"]  # IRSA annotation
    assert values["serviceAccount"]["name"] == yace.SERVICE_ACCOUNT  # the one its trust policy names
    rule = next(r for r in plan.resources if r.name == "monitoring-rules")
    origin = {r["alert"] for g in rule.inputs["spec"]["groups"] for r in g["rules"]
              if r.get("labels", {}).get("origin") == CLOUDWATCH_ORIGIN}  # fmt: skip
    expected = {"SpotInterruptionsHigh"} | (
        {"FailoverSplitBrain", "FailoverNoMaster", "FailoverReplicationLagHigh"} if config.failover else set()) | (
        {"VpnTunnelDown", "VpnBothTunnelsDown"} if config.vpn else set())
    assert origin == expected

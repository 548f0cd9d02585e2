"""The Prometheus rules the program declares, checked and unit-tested with promtool.

`promtool check rules --lint=all --lint-fatal` runs on the exact groups of every stack's
PrometheusRule. `promtool test rules` runs each alert on a violating series (it must fire at
the expected time, with the expected labels) and on a healthy one (it must stay silent).
The unit tests use the same groups with the annotations removed: promtool compares rendered
annotations too, and their templates are already parsed by `promtool check rules`.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.alerting import rules
from components.config import AlertingConfig
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS
from .signals import signal_alerts

REQ = "inference_request_duration_seconds"
NS = 'namespace="inference"'
BASE_LABELS = {"namespace": "inference"}
R = '{namespace="inference", route="/v1/completions"'


def _series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def _requests(ok_per_min: int, errors_per_min: int, minutes: int) -> list[dict[str, str]]:
    return [_series(f'{REQ}_count{R}, status="200"}}', f"0+{ok_per_min}x{minutes}"),
            _series(f'{REQ}_count{R}, status="500"}}', f"0+{errors_per_min}x{minutes}")]  # fmt: skip


def _latency(fast_per_min: int, total_per_min: int, minutes: int, slowest: str = "1") -> list[dict[str, str]]:
    """A histogram where ``fast_per_min`` of ``total_per_min`` requests finish within 0.5 s, the rest by ``slowest``."""
    return [_series(f'{REQ}_bucket{R}, status="200", le="0.5"}}', f"0+{fast_per_min}x{minutes}"),
            _series(f'{REQ}_bucket{R}, status="200", le="{slowest}"}}', f"0+{total_per_min}x{minutes}"),
            _series(f'{REQ}_bucket{R}, status="200", le="+Inf"}}', f"0+{total_per_min}x{minutes}"),
            _series(f'{REQ}_count{R}, status="200"}}', f"0+{total_per_min}x{minutes}")]  # fmt: skip


NODE = {"instance": "10.0.1.5:9100"}
GPU = {"gpu": "0", "Hostname": "ip-10-0-1-5"}
POD = {"namespace": "inference", "pod": "demo-0"}
POD_INFO = _series('kube_pod_info{namespace="inference", pod="demo-0", node="ip-10-0-1-5"}', "1+0x40")

PAIR = {"dimension_Pair": "gpu-prod-session-store"}
QUEUE = 'dimension_QueueName="gpu-dev-interruptions"'
VPN, TUNNEL = {"dimension_VpnId": "vpn-0abc"}, "dimension_TunnelIpAddress"


def _pair(master_a: str = "1+0x10", master_b: str = "0+0x10", lag_b: str = "0+0x10") -> list[dict[str, str]]:
    pair = 'dimension_Pair="gpu-prod-session-store"'
    return [_series(f'aws_platform_failover_is_master_maximum{{{pair}, dimension_Node="a"}}', master_a),
            _series(f'aws_platform_failover_is_master_maximum{{{pair}, dimension_Node="b"}}', master_b),
            _series(f'aws_platform_failover_replication_lag_seconds_maximum{{{pair}, dimension_Node="b"}}', lag_b)]  # fmt: skip


def _tunnels(first: str, second: str) -> list[dict[str, str]]:
    return [_series(f'aws_vpn_tunnel_state_maximum{{dimension_VpnId="vpn-0abc", {TUNNEL}="{address}"}}', values)
            for address, values in (("1.1.1.1", first), ("2.2.2.2", second))]  # fmt: skip


# alert -> (violating series, healthy series, eval time, labels the alert must carry)
CASES = {
    "InferenceErrorBudgetFastBurn": (_requests(600, 60, 90), _requests(600, 0, 90), "70m", BASE_LABELS),
    "InferenceErrorBudgetSlowBurn": (_requests(996, 4, 240), _requests(1000, 0, 240), "3h", BASE_LABELS),
    "InferenceLatencyBudgetFastBurn": (_latency(80, 100, 90), _latency(100, 100, 90), "70m", BASE_LABELS),
    "InferenceLatencyBudgetSlowBurn": (_latency(96, 100, 240), _latency(100, 100, 240), "3h", BASE_LABELS),
    "InferenceLatencyP99High": (_latency(50, 100, 30), _latency(100, 100, 30), "20m", BASE_LABELS),
    "InferenceTimeToFirstTokenHigh": (
        [_series('inference_time_to_first_token_seconds_bucket{namespace="inference", le="1"}', "0+0x30"),
         _series('inference_time_to_first_token_seconds_bucket{namespace="inference", le="2.5"}', "0+100x30"),
         _series('inference_time_to_first_token_seconds_bucket{namespace="inference", le="+Inf"}', "0+100x30")],
        [_series('inference_time_to_first_token_seconds_bucket{namespace="inference", le="1"}', "0+100x30"),
         _series('inference_time_to_first_token_seconds_bucket{namespace="inference", le="+Inf"}', "0+100x30")],
        "20m", BASE_LABELS),
    "InferenceQueueBacklog": ([_series('inference_queue_depth{namespace="inference", pod="demo-0"}', "20+0x30")],
                              [_series('inference_queue_depth{namespace="inference", pod="demo-0"}', "3+0x30")],
                              "15m", POD),
    "InferenceShedding": (
        [*_requests(100, 0, 30), _series(f'inference_rejected_requests_total{{{NS}, reason="queue_full"}}', "0+5x30")],
        [*_requests(100, 0, 30), _series(f'inference_rejected_requests_total{{{NS}, reason="invalid_request"}}', "0+5x30")],
        "20m", BASE_LABELS),
    "InferenceRequestVolumeDrop": ([_series(f'{REQ}_count{R}, status="200"}}', "0+1000x1440 1440000+300x180")],
                                   [_series(f'{REQ}_count{R}, status="200"}}', "0+1000x1620")], "1590m", BASE_LABELS),
    "InferenceReadinessFlapping": (
        [_series('kube_pod_status_ready{namespace="inference", pod="demo-0", condition="true"}', "1 0 1 0 1 0 1 1 1 1"), POD_INFO],
        [_series('kube_pod_status_ready{namespace="inference", pod="demo-0", condition="true"}', "1+0x10"), POD_INFO],
        "9m", {**POD, "condition": "true", "node": "ip-10-0-1-5"}),
    "PodRestartingOften": (
        [_series('kube_pod_container_status_restarts_total{namespace="inference", pod="demo-0", container="server"}', "0+1x40"), POD_INFO],
        [_series('kube_pod_container_status_restarts_total{namespace="inference", pod="demo-0", container="server"}', "2+0x40"), POD_INFO],
        "35m", {**POD, "container": "server", "node": "ip-10-0-1-5"}),
    "NodeCpuHigh": ([_series('node_cpu_seconds_total{instance="10.0.1.5:9100", cpu="0", mode="idle"}', "0+6x20")],
                    [_series('node_cpu_seconds_total{instance="10.0.1.5:9100", cpu="0", mode="idle"}', "0+54x20")],
                    "15m", NODE),
    "NodeMemoryHigh": ([_series('node_memory_MemAvailable_bytes{instance="10.0.1.5:9100"}', "1500000000+0x20"),
                        _series('node_memory_MemTotal_bytes{instance="10.0.1.5:9100"}', "10000000000+0x20")],
                       [_series('node_memory_MemAvailable_bytes{instance="10.0.1.5:9100"}', "5000000000+0x20"),
                        _series('node_memory_MemTotal_bytes{instance="10.0.1.5:9100"}', "10000000000+0x20")],
                       "15m", NODE),
    "NodeMemoryLow": ([_series('node_memory_MemAvailable_bytes{instance="10.0.1.5:9100"}', "400000000+0x20")],
                      [_series('node_memory_MemAvailable_bytes{instance="10.0.1.5:9100"}', "2000000000+0x20")],
                      "10m", NODE),
    "GpuMemoryHigh": ([_series('DCGM_FI_DEV_FB_USED{gpu="0", Hostname="ip-10-0-1-5"}', "23000+0x30"),
                       _series('DCGM_FI_DEV_FB_FREE{gpu="0", Hostname="ip-10-0-1-5"}', "1000+0x30")],
                      [_series('DCGM_FI_DEV_FB_USED{gpu="0", Hostname="ip-10-0-1-5"}', "12000+0x30"),
                       _series('DCGM_FI_DEV_FB_FREE{gpu="0", Hostname="ip-10-0-1-5"}', "12000+0x30")],
                      "20m", GPU),
    "GpuIdle": ([_series('DCGM_FI_DEV_GPU_UTIL{gpu="0", Hostname="ip-10-0-1-5"}', "3+0x200")],
                [_series('DCGM_FI_DEV_GPU_UTIL{gpu="0", Hostname="ip-10-0-1-5"}', "60+0x200")], "130m", GPU),
    "GpuXidError": ([_series('DCGM_FI_DEV_XID_ERRORS{gpu="0", Hostname="ip-10-0-1-5"}', "0 0 79 79")],
                    [_series('DCGM_FI_DEV_XID_ERRORS{gpu="0", Hostname="ip-10-0-1-5"}', "0+0x4")], "3m", GPU),
    "MirrorSyncFailing": (
        [_series('kube_job_status_failed{namespace="model-mirror", job_name="mirror-sync-29371500"}', "0 1 1")],
        [_series('kube_job_status_failed{namespace="model-mirror", job_name="mirror-sync-29371500"}', "0+0x3")],
        "2m", {"namespace": "model-mirror", "job_name": "mirror-sync-29371500"}),
    "MirrorSyncStale": (
        [_series('kube_cronjob_status_last_successful_time{namespace="model-mirror", cronjob="mirror-sync"}', "0+0x1600")],
        [_series('kube_cronjob_status_last_successful_time{namespace="model-mirror", cronjob="mirror-sync"}', "0+60x1600")],
        "1580m", {"namespace": "model-mirror", "cronjob": "mirror-sync"}),
    # CloudWatch series through the exporter (YACE names; components/alerting/cloudwatch_exporter.py)
    "FailoverSplitBrain": (_pair(master_a="1+0x10", master_b="1+0x10"), _pair(master_a="1+0x10", master_b="0+0x10"),
                           "3m", PAIR),
    "FailoverNoMaster": (_pair(master_a="1 0+0x10", master_b="0+0x10"), _pair(master_a="0+0x10", master_b="1+0x10"),
                         "6m", PAIR),
    "FailoverReplicationLagHigh": (_pair(lag_b="0 12+0x10"), _pair(lag_b="0.3+0x10"), "4m", PAIR),
    "VpnTunnelDown": (_tunnels("1 0+0x10", "1+0x10"), _tunnels("1+0x10", "1+0x10"), "6m", {**VPN, TUNNEL: "1.1.1.1"}),
    # 5-minute sums: 1 notice per 5 minutes is 12 an hour (over 4); one in the hour is healthy
    "SpotInterruptionsHigh": ([_series(f"aws_sqs_number_of_messages_sent_sum{{{QUEUE}}}", "1+0x80")],
                              [_series(f"aws_sqs_number_of_messages_sent_sum{{{QUEUE}}}", "0+0x60 1 1 1 1 1 0+0x15")],
                              "75m", {"dimension_QueueName": "gpu-dev-interruptions"}),
    "VpnBothTunnelsDown": (_tunnels("0+0x10", "1 0+0x10"), _tunnels("0+0x10", "1+0x10"), "6m", VPN),
}  # fmt: skip

ALL_ALERTS = [*rules.alerts(AlertingConfig()), *signal_alerts(load_stack_config("prod", ROOT))]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make` installs Debian's prometheus package as root (Makefile DEB_PACKAGES)")
    return path


def _write_rules(path: Path, groups: list[dict], annotations: bool = True) -> None:
    groups = copy.deepcopy(groups)
    if not annotations:
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))


@pytest.mark.parametrize("stack", STACKS)
def test_promtool_lints_the_rule_groups_of_every_stack(tmp_path, stack):
    config = load_stack_config(stack, ROOT)
    groups = rules.rule_groups(config.alerting, signal_alerts(config))
    path = tmp_path / "rules.yaml"
    _write_rules(path, groups)
    result = subprocess.run([_promtool(), "check", "rules", "--lint=all", "--lint-fatal", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path):
    groups = rules.rule_groups(AlertingConfig())
    groups[1]["rules"][0]["expr"] = "sum(rate(inference_request_duration_seconds_count[5m]) >"
    path = tmp_path / "rules.yaml"
    _write_rules(path, groups)
    assert subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True).returncode != 0


def test_every_alert_has_a_unit_test_and_a_runbook():
    names = {alert.name for alert in ALL_ALERTS}
    assert names == set(CASES)
    for name in names:
        runbook = ROOT / "docs" / "runbooks" / f"{name}.md"
        assert runbook.is_file(), f"docs/runbooks/{name}.md is missing"
        assert runbook.read_text().startswith(f"# {name}\n")


@pytest.mark.parametrize("alert", sorted(CASES))
def test_each_alert_fires_on_a_violation_and_stays_silent_when_healthy(tmp_path, alert):
    violating, healthy, at, labels = CASES[alert]
    [spec] = [a for a in ALL_ALERTS if a.name == alert]
    _write_rules(tmp_path / "rules.yaml", rules.rule_groups(AlertingConfig(), ALL_ALERTS[len(rules.alerts(AlertingConfig())):]),
                 annotations=False)  # fmt: skip
    origin = {"origin": "cloudwatch"} if spec.twins else {}
    tests = []
    for series, expected in ((violating, [{"exp_labels": {**labels, "severity": spec.severity, **origin}}]), (healthy, [])):
        tests.append({"interval": "1m", "input_series": series,
                      "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}]})  # fmt: skip
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                         "tests": tests}, sort_keys=False))  # fmt: skip
    result = subprocess.run([_promtool(), "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

"""Alertmanager's routing, checked and route-tested with amtool (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from components.alerting import alertmanager
from components.config import AlertingConfig, AlertWebhookConfig
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS
from .signals import signal_alerts

TOPICS = {"critical": "arn:aws:sns:us-east-1:111122223333:platform-page",
          "warning": "arn:aws:sns:us-east-1:111122223333:platform-ticket"}  # fmt: skip


def _amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool is missing: `make` installs Debian's prometheus-alertmanager as root (Makefile DEB_PACKAGES)")
    return path


def _write(tmp_path, config: dict) -> str:
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def _receivers_for(path: str, *labels: str) -> list[str]:
    result = subprocess.run([_amtool(), "config", "routes", "test", f"--config.file={path}", *labels],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(",")


@pytest.mark.parametrize("stack", STACKS)
def test_amtool_accepts_every_stacks_config(tmp_path, stack):
    path = _write(tmp_path, alertmanager.config(load_stack_config(stack, ROOT).alerting, TOPICS, "us-east-1"))
    result = subprocess.run([_amtool(), "check-config", path], capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    assert f"{len(alertmanager.INHIBIT_RULES)} inhibit rules" in result.stdout


def test_amtool_rejects_a_route_to_a_missing_receiver(tmp_path):
    config = alertmanager.config(AlertingConfig(), TOPICS, "us-east-1")
    config["route"]["routes"][1]["receiver"] = "nobody"
    result = subprocess.run([_amtool(), "check-config", _write(tmp_path, config)], capture_output=True, text=True)
    assert result.returncode != 0 and "nobody" in result.stdout + result.stderr


def test_each_severity_reaches_its_topic_and_webhooks_get_copies(tmp_path):
    hooks = [AlertWebhookConfig(name="chat", url="https://chat.example.com/alerts", severities=["critical"]),
             AlertWebhookConfig(name="tracker", url="https://tracker.example.com/hook")]  # fmt: skip
    config = alertmanager.config(AlertingConfig(webhooks=hooks), TOPICS, "eu-west-1")
    path = _write(tmp_path, config)
    assert _receivers_for(path, "alertname=NodeMemoryLow", "severity=critical") == ["chat", "tracker", "page"]
    assert _receivers_for(path, "alertname=GpuIdle", "severity=warning") == ["tracker", "ticket"]
    assert _receivers_for(path, "alertname=Watchdog", "severity=none") == ["null"]
    assert _receivers_for(path, "alertname=Unlabelled") == ["ticket"]  # nothing is dropped for lack of a severity
    # CloudWatch already paged for these: Alertmanager adds the webhooks only
    assert _receivers_for(path, "alertname=VpnBothTunnelsDown", "severity=critical", "origin=cloudwatch") == [
        "chat", "tracker", "null"]
    assert _receivers_for(path, "alertname=FailoverReplicationLagHigh", "severity=warning", "origin=cloudwatch") == [
        "tracker", "null"]
    sns = {r["name"]: r["sns_configs"][0] for r in config["receivers"] if "sns_configs" in r}
    assert {name: c["topic_arn"] for name, c in sns.items()} == {"page": TOPICS["critical"], "ticket": TOPICS["warning"]}
    assert all(c["sigv4"] == {"region": "eu-west-1"} for c in sns.values())


def test_inhibitions_name_alerts_that_exist_or_come_with_the_chart():
    from components.alerting.rules import alerts

    ours = {a.name for a in [*alerts(AlertingConfig()), *signal_alerts(load_stack_config("prod", ROOT))]}
    chart = {"KubeNodeNotReady", "KubeNodeUnreachable"}  # kube-prometheus-stack's default rules
    for rule in alertmanager.INHIBIT_RULES:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            names = matcher.split("=", 1)[1].strip('~"').split("|")
            assert set(names) <= ours | chart, matcher


def test_the_publisher_may_only_publish_to_the_alert_topics():
    policy = alertmanager.publisher_policy(list(TOPICS.values()), "arn:aws:kms:us-east-1:111122223333:key/k")
    [publish, kms] = policy["Statement"]
    assert publish["Action"] == "sns:Publish" and publish["Resource"] == list(TOPICS.values())
    assert json.dumps(policy)

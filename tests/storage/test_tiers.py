"""Lifecycle schedules, hot-tier sizing and the log shipper's pieces (pure, property-tested, real tools)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.config import ColdClassConfig, ConfigError, HotTierConfig, LogShippingConfig, parse_config
from components.gpu import scheduling
from components.gpu.userdata import data_volume_script, node_config
from components.storage import audit, lifecycle, shipping

from ..conftest import ROOT

TIERS = ("standardIaDays", "glacierIrDays", "deepArchiveDays")
CLASSES = dict(zip(TIERS, ("STANDARD_IA", "GLACIER_IR", "DEEP_ARCHIVE")))


def _valid(days: dict[str, int | None], expire: int | None) -> bool:
    """S3's rules, written out independently of the code under test."""
    present = [(key, days[key]) for key in TIERS if days[key] is not None]
    if days["standardIaDays"] is not None and days["standardIaDays"] < 30:
        return False
    for (key_a, a), (_, b) in zip(present, present[1:]):
        if b <= a or (key_a == "standardIaDays" and b < a + 30):
            return False
    return expire is None or not present or expire > present[-1][1]


optional_days = st.one_of(st.none(), st.integers(min_value=1, max_value=1200))


@given(optional_days, optional_days, optional_days, optional_days)
def test_a_schedule_is_accepted_exactly_when_s3_would_take_it(ia, glacier, deep, expire):
    days = {"standardIaDays": ia, "glacierIrDays": glacier, "deepArchiveDays": deep}
    transitions = [(key, CLASSES[key], value) for key, value in days.items() if value is not None]
    problems = lifecycle.schedule_problems(transitions, expire)
    assert (not problems) == _valid(days, expire)
    for key, value, message in problems:
        assert key in (*TIERS, "expireDays") and isinstance(value, int) and message
    if not problems:
        [rule] = lifecycle.lifecycle_rules(transitions, expire, 30)
        assert [t["Days"] for t in rule.get("Transitions", [])] == sorted(v for _, _, v in transitions)
        assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
        assert ("Expiration" in rule) == (expire is not None)


BASE = {"platform:environment": "dev", "platform:aws": '{"region": "us-east-1"}',
        "platform:tags": '{"costCenter": "ml", "owner": "team@example.com"}'}  # fmt: skip


def _problems(storage: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "platform:storage": json.dumps(storage)}, set(), "stacks/Pulumi.dev.yaml")
    return str(info.value)


@pytest.mark.parametrize("storage, expected", [
    ({"classes": {"logs": {"standardIaDays": 10}}}, "platform:storage.classes.logs.standardIaDays = 10"),
    ({"classes": {"logs": {"glacierIrDays": 40}}}, "platform:storage.classes.logs.glacierIrDays = 40: must be at least 60: S3 keeps objects 30 days in Standard-IA"),
    ({"classes": {"logs": {"glacierIrDays": 200, "deepArchiveDays": 180}}}, "platform:storage.classes.logs.deepArchiveDays = 180: must be later than glacierIrDays (200)"),
    ({"classes": {"logs": {"expireDays": 100}}}, "platform:storage.classes.logs.expireDays = 100: must be later than the last transition, deepArchiveDays (180)"),
    ({"classes": {"audit": {"objectLockDays": 900}, "logs": {}}}, "platform:storage.classes.audit.expireDays = 730: is shorter than objectLockDays (900)"),
    ({"classes": {"audit": {}}}, "platform:storage.classes = "),
    ({"classes": {"logs": {}, "audit": {}}}, "must include `audit` with objectLockDays"),
    ({"hot": {"throughputMibps": 1000}}, "platform:storage.hot.throughputMibps = 1000: gp3 allows at most iops/4 = 750 MiB/s"),
    ({"firehose": {"bufferingSizeMb": 16}}, "platform:storage.firehose.bufferingSizeMb = 16"),
    ({"hot": {"source": "ebs", "sizeGib": 20}, "shipping": {"gbPerDay": 100, "expectedNodes": 1}},
     "platform:storage.hot.sizeGib = 20: must hold the largest EKS model cache"),
])  # fmt: skip
def test_bad_storage_config_names_the_key(storage, expected):
    assert expected in _problems(storage)


def test_an_instance_store_hot_tier_needs_gpu_types_that_have_one():
    gpu = json.dumps({"spot": {"instanceTypes": ["g6.xlarge", "p3.2xlarge", "g5.xlarge"], "maxSize": 2}})
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "platform:gpu": gpu}, set(), "stacks/Pulumi.dev.yaml")
    assert "platform:storage.hot.source = \"instanceStore\": p3.2xlarge has no instance store" in str(info.value)


@given(st.floats(min_value=0.1, max_value=5000), st.integers(min_value=1, max_value=500), st.integers(min_value=1, max_value=30))
def test_the_buffer_holds_the_retention_and_rotation_fits_it(gb_per_day, nodes, days):
    sizing = shipping.hot_sizing(HotTierConfig(retention_days=days), LogShippingConfig(gb_per_day=gb_per_day, expected_nodes=nodes))
    node_mib_per_day = gb_per_day * 1024 / nodes
    assert sizing.buffer_limit_mib >= node_mib_per_day * days  # a Firehose outage of `days` loses nothing
    assert sizing.buffer_limit_mib <= node_mib_per_day * days * 1.25 + 1
    assert shipping.CONTAINER_LOG_MIN_MIB <= sizing.container_log_max_mib <= shipping.CONTAINER_LOG_MAX_MIB
    rotation = shipping.kubelet_log_rotation(sizing)
    assert rotation == {"containerLogMaxSize": f"{sizing.container_log_max_mib}Mi", "containerLogMaxFiles": 5}


def test_the_seeds_volume_sizes_each_node():
    # 10 GB a day over 4 nodes, 3 days hot: 2.5 GB a node a day, 7.5 GB held, 9.4 GB buffer cap.
    sizing = shipping.hot_sizing(HotTierConfig(), LogShippingConfig())
    assert sizing.node_gb_per_day == 2.5
    assert sizing.buffer_limit_mib == 9600 and sizing.container_log_max_mib == 1024


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `make` installs it as root (Makefile DEB_PACKAGES)")
    return path


@pytest.mark.parametrize("labels, container, namespace, expected", [
    ({"app.kubernetes.io/name": "inference-server", "app": "x"}, "server", "inference", "inference-server"),
    ({"app": "Model_Mirror"}, "mirror", "mirror", "model-mirror"),
    ({}, "coredns", "kube-system", "coredns"),
    (None, None, "default", "default"),
])  # fmt: skip
def test_the_lua_filter_sets_the_partition_key_under_lua(tmp_path, labels, container, namespace, expected):
    """Fluent Bit's Lua filter, run by a real Lua 5.4 on the record shapes the kubernetes filter makes."""
    kubernetes = [f'namespace_name = "{namespace}"']
    if container:
        kubernetes.append(f'container_name = "{container}"')
    if labels is not None:
        pairs = ", ".join(f'["{k}"] = "{v}"' for k, v in labels.items())
        kubernetes.append(f"labels = {{{pairs}}}")
    driver = tmp_path / "driver.lua"
    driver.write_text(f'dofile("{shipping.RUNTIME / shipping.COMPONENT_SCRIPT}")\n'
                      f'local code, ts, record = set_component("kube.x", 1.5, {{log = "hi", kubernetes = {{{", ".join(kubernetes)}}}}})\n'
                      'print(code, ts, record["component"], record["log"])\n')  # fmt: skip
    result = subprocess.run([_tool("lua5.4"), str(driver)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "1.5", expected, "hi"]


def test_the_lua_filter_handles_a_record_without_kubernetes_metadata(tmp_path):
    driver = tmp_path / "driver.lua"
    driver.write_text(f'dofile("{shipping.RUNTIME / shipping.COMPONENT_SCRIPT}")\n'
                      'local code, ts, record = set_component("kube.x", 2, {log = "raw"})\nprint(record["component"])\n')  # fmt: skip
    assert subprocess.run([_tool("lua5.4"), str(driver)], capture_output=True, text=True).stdout.strip() == "unknown"


def test_the_shipper_objects_are_valid_kubernetes_and_run_on_gpu_nodes():
    sizing = shipping.hot_sizing(HotTierConfig(), LogShippingConfig())
    config = shipping.fluent_bit_config(region="us-east-1", stream_name="platform-dev-logs",
                                        audit_stream_name="platform-dev-audit", sizing=sizing)  # fmt: skip
    objects = shipping.kubernetes_objects(LogShippingConfig(), "arn:aws:iam::111122223333:role/shipper", config)
    for manifest in objects:
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)
    daemonset = objects[-1]
    pod = daemonset["spec"]["template"]["spec"]
    assert scheduling.gpu_toleration() in pod["tolerations"]
    assert objects[1]["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/shipper"}
    assert pod["serviceAccountName"] == objects[1]["metadata"]["name"]
    assert f"storage.total_limit_size {sizing.buffer_limit_mib}M" in config
    assert "delivery_stream          platform-dev-logs" in config and "Name                     kinesis_firehose" in config
    assert objects[4]["data"][shipping.COMPONENT_SCRIPT] == (shipping.RUNTIME / shipping.COMPONENT_SCRIPT).read_text()


def test_kubernetes_validate_rejects_a_broken_shipper():
    objects = shipping.kubernetes_objects(LogShippingConfig(), "arn", "conf")
    broken = json.loads(json.dumps(objects[-1]))
    broken["spec"]["template"]["spec"]["tolerations"][0]["effect"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)


def test_gpu_nodes_put_the_hot_directories_on_local_disks(tmp_path):
    instance_store = node_config("c", "https://e", "Q0E=", "172.20.0.0/16", {}, [], hot_source="instanceStore",
                                 kubelet_config={"containerLogMaxSize": "50Mi"})  # fmt: skip
    assert instance_store["spec"]["instance"] == {"localStorage": {"strategy": "RAID0"}}
    assert instance_store["spec"]["kubelet"]["config"] == {"containerLogMaxSize": "50Mi"}
    assert "instance" not in node_config("c", "https://e", "Q0E=", "172.20.0.0/16", {}, [], hot_source="ebs")["spec"]
    script = tmp_path / "data-volume.sh"
    script.write_text(data_volume_script())
    result = subprocess.run([_tool("shellcheck"), "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    for directory in ("/var/lib/kubelet", "/var/lib/containerd", "/var/log/pods"):
        assert f'mount --bind "$mount{directory}" {directory}' in script.read_text()


def test_every_stack_keeps_the_default_classes_valid():
    from platformctl.common import load_stack_config

    from ..conftest import STACKS

    for stack in STACKS:
        classes = load_stack_config(stack, ROOT).storage.classes
        assert {"logs", "audit"} <= set(classes) and classes["audit"].object_lock_days
        assert isinstance(classes["logs"], ColdClassConfig)


@given(st.floats(min_value=0.01, max_value=1000), st.lists(st.integers(min_value=1, max_value=400), max_size=3, unique=True),
       st.one_of(st.none(), st.integers(min_value=1, max_value=3000)))
def test_steady_state_spreads_each_days_data_over_its_classes(daily, days, expire):
    days = sorted(days)
    if expire is not None and days and expire <= days[-1]:
        expire = days[-1] + 1
    transitions = list(zip(("STANDARD_IA", "GLACIER_IR", "DEEP_ARCHIVE"), days))
    held = lifecycle.steady_state_gb(daily, transitions, expire)
    end = expire if expire is not None else max(lifecycle.NO_EXPIRY_HORIZON_DAYS, (days or [0])[-1] + 1)
    assert sum(held.values()) == pytest.approx(daily * end)
    bounds = [0, *days, end]
    for (storage_class, _), start, stop in zip([("STANDARD", 0), *transitions], bounds, bounds[1:]):
        assert held[storage_class] == pytest.approx(daily * (stop - start))


def test_the_seeds_logs_at_steady_state():
    """10 GB a day with the default schedule (30/90/180/730 days): the table in docs/storage.md."""
    held = lifecycle.steady_state_gb(10, [("STANDARD_IA", 30), ("GLACIER_IR", 90), ("DEEP_ARCHIVE", 180)], 730)
    assert held == {"STANDARD": 300, "STANDARD_IA": 600, "GLACIER_IR": 900, "DEEP_ARCHIVE": 5500}


# Option names Fluent Bit accepts, from fluent/fluent-bit: src/flb_config.c (SERVICE), each
# plugin's config_map (in_tail, filter_kubernetes, filter_lua, filter_rewrite_tag,
# out_kinesis_firehose) and the properties every input/output takes (src/flb_input.c,
# src/flb_output.c). No Fluent Bit binary reaches this machine, so the rendered file is
# checked against these names, case-insensitively.
FLUENT_BIT_OPTIONS = {
    "SERVICE": {"flush", "log_level", "http_server", "http_listen", "http_port", "health_check", "storage.path",
                "storage.sync", "storage.backlog.mem_limit"},
    "tail": {"path", "exclude_path", "multiline.parser", "db", "db.locking", "mem_buf_limit", "skip_long_lines",
             "refresh_interval"},
    "kubernetes": {"merge_log", "keep_log", "labels", "annotations", "k8s-logging.exclude"},
    "lua": {"script", "call"},
    "rewrite_tag": {"rule", "emitter_name", "emitter_storage.type", "emitter_mem_buf_limit"},
    "kinesis_firehose": {"region", "delivery_stream", "time_key", "time_key_format"},
}
COMMON = {"name", "match", "tag", "storage.type", "retry_limit", "storage.total_limit_size"}


def _sections(text: str) -> list[tuple[str, dict[str, str]]]:
    sections: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if line.startswith("["):
            sections.append((line.strip("[]"), {}))
        elif line.strip():
            key, _, value = line.strip().partition(" ")
            assert key.lower() not in sections[-1][1], f"{key} twice in [{sections[-1][0]}]"
            sections[-1][1][key.lower()] = value.strip()
    return sections


def _default_config() -> str:
    return shipping.fluent_bit_config(region="us-east-1", stream_name="logs-stream", audit_stream_name="audit-stream",
                                      sizing=shipping.hot_sizing(HotTierConfig(), LogShippingConfig()))  # fmt: skip


def test_the_fluent_bit_config_uses_only_options_the_plugins_define():
    sections = _sections(_default_config())
    assert [name for name, _ in sections] == ["SERVICE", "INPUT", "FILTER", "FILTER", "FILTER", "OUTPUT", "OUTPUT"]
    for name, options in sections:
        plugin = "SERVICE" if name == "SERVICE" else options["name"]
        unknown = set(options) - FLUENT_BIT_OPTIONS[plugin] - (COMMON if name != "SERVICE" else set())
        assert not unknown, f"[{name}] {plugin}: {sorted(unknown)}"
    assert sections[-2][1]["match"] == sections[1][1]["tag"]  # what the input tags, the log output ships


def route(config: str, tag: str, record: dict) -> list[str]:
    """The delivery streams a record reaches through this config's filters and outputs.

    A model of Fluent Bit's routing, for the parts this config uses: filters run in order on
    records whose tag their ``Match`` globs; ``rewrite_tag`` re-emits a record whose key
    matches the rule's regex under the new tag, from the top of the pipeline, and drops the
    original when the rule's last word is ``false``. As in ``flb_ra_key_regex_match``, the
    regex only ever matches a string value. kubernetes and lua filters are left out: the lua
    filter runs under real Lua above, and the merged record is what ``record`` stands for.
    """
    sections = _sections(config)
    reached: list[str] = []
    pending = [(tag, record)]
    while pending:
        tag, record = pending.pop()
        dropped = False
        for kind, options in sections:
            if kind != "FILTER" or options["name"] != "rewrite_tag" or not fnmatch.fnmatchcase(tag, options["match"]):
                continue
            key, regex, new_tag, keep = options["rule"].split()
            value = record.get(key.lstrip("$"))
            if isinstance(value, str) and re.search(regex, value):
                pending.append((new_tag.replace("$TAG", tag), record))
                dropped = keep == "false"
                break
        if not dropped:
            reached += [o["delivery_stream"] for k, o in sections if k == "OUTPUT" and fnmatch.fnmatchcase(tag, o["match"])]
    return reached


def test_audit_events_go_to_the_audit_stream_only_and_everything_else_to_the_logs():
    config, tag = _default_config(), "kube.var.log.containers.qwen-7b-0_inference_server-abc.log"
    event = {"audit": audit.SCHEMA, "event": "inference.request", "subject": "user-17", "kubernetes": {"pod_name": "q"}}
    assert route(config, tag, event) == ["audit-stream"]
    assert route(config, tag, {"message": "request", "route": "/v1/completions"}) == ["logs-stream"]
    assert route(config, tag, {**event, "audit": "v2"}) == ["audit-stream"]  # a later schema is still audit
    # A JSON `true` would never match Fluent Bit's regex: the reason the marker is a string.
    assert route(config, tag, {**event, "audit": True}) == ["logs-stream"]
    # Every source's marker is the one the rule routes (the emitters can't import this package).
    from components.failover.runtime import failover_agent
    from components.mirror.runtime import sync
    from inference_server import audit as server_audit

    assert {server_audit.SCHEMA, sync.AUDIT_SCHEMA, failover_agent.AUDIT_SCHEMA} == {audit.SCHEMA}
    assert re.fullmatch(audit.ROUTING_REGEX, audit.SCHEMA)


def test_the_data_volume_script_formats_once_and_binds_the_hot_directories(tmp_path):
    """Run for real on a loop device, in a private mount namespace (root, as CI runs)."""
    import os

    if os.geteuid() != 0:
        pytest.fail("this test needs root (loop device, mounts); CI runs as root")
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    os.truncate(image, 320 * 2**20)
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True).stdout.strip()
    try:
        directories = tuple(str(tmp_path / "root" / d.lstrip("/")) for d in ("/var/lib/kubelet", "/var/lib/containerd", "/var/log/pods"))
        fstab = tmp_path / "fstab"
        fstab.write_text("# existing line\n")
        script = tmp_path / "data-volume.sh"
        script.write_text(data_volume_script(device=loop, mount=str(tmp_path / "data"), directories=directories, fstab=str(fstab)))
        probe = f"{directories[0]}/pods/model-cache"
        # First boot, a file on the volume, a reboot's second run (must not format again), the model cache.
        commands = (f"bash {script} && echo kept > {tmp_path}/data/marker && bash {script} && "
                    f"mkdir -p {probe} && echo weights > {probe}/w && findmnt -n -o FSTYPE,SOURCE --target {probe}/w && "
                    f"cat {tmp_path}/data{directories[0]}/pods/model-cache/w {tmp_path}/data/marker")
        result = subprocess.run([_tool("unshare"), "--mount", "--propagation", "private", "sh", "-c", commands],
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr
        fstype, source, content, marker = result.stdout.split()[:4]
        assert fstype == "xfs" and content == "weights"  # the model cache lands on the data volume
        assert marker == "kept"  # the second run found the file system and left it alone
        assert source.startswith(loop)
        lines = fstab.read_text().splitlines()
        assert lines[0] == "# existing line" and len(lines) == 1 + 1 + len(directories)  # run twice, written once
        assert subprocess.run(["blkid", "-o", "value", "-s", "TYPE", loop], capture_output=True, text=True).stdout.strip() == "xfs"
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)

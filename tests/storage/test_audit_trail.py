"""The audit trail: every source's events land locked under their partition, the Glue table
types every field they write, and the saved queries answer over what landed.

The server's own events, from the real demo server, are tested in tests/inference/test_audit.py
with the same helpers; here the mirror's and the failover agent's come from their real code.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from components.failover.runtime import failover_agent as agent
from components.mirror.runtime import sync
from components.mirror.runtime.layout import FileEntry, RevisionManifest
from components.storage import audit, firehose
from inference_server import audit as server_audit

from .audit_trail import athena_table, create_audit_stream, landed, partition_of, shipped
from .firehose_semantics import evaluate_prefix, firehose_semantics, utc_now  # noqa: F401

REGION = "us-east-1"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def aws():
    with mock_aws():
        yield {name: boto3.client(name, region_name=REGION) for name in ("s3", "firehose", "iam", "kms", "glue", "athena")}


@pytest.fixture
def local_redis(tmp_path):
    """A standalone redis-server on loopback: the node's own Redis, which a MASTER notify promotes."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: `make` installs it (Debian package redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "redis.pass").write_text("audit-test-password\n")
    (tmp_path / "redis.conf").write_text(f'port {port}\nbind 127.0.0.1\nsave ""\ndir {tmp_path}\n'
                                         + agent.redis_auth_conf("audit-test-password"))  # the agent's own ACL
    process = subprocess.Popen(["redis-server", str(tmp_path / "redis.conf")], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _server_event(status: int = 200, tenant: str = "acme", prompt: int = 5, generated: int = 7) -> dict:
    generation = SimpleNamespace(prompt_ids=list(range(prompt)), tokens=list(range(generated)))
    return server_audit.event(request_id="r-1", route="/v1/completions", status=status, duration_s=0.25,
                              headers={b"x-real-ip": b"192.0.2.7"}, peer="10.0.0.1",
                              state={"subject": "user-17", "tenant": tenant, "model": "qwen-7b", "generation": generation})  # fmt: skip


def _mirror_event() -> dict:
    manifest = RevisionManifest(repo="acme/tiny", commit=COMMIT, files=(FileEntry("a.bin", 10, "0" * 64, "1" * 40, True),
                                                                        FileEntry("b.json", 5, "2" * 64, "3" * 40, False)),
                                published_at="2026-11-22T00:00:00Z", upstream="https://huggingface.co", refs=("main",))  # fmt: skip
    return sync.publish_event(manifest, "main", ["main"], True, "system:serviceaccount:model-mirror:mirror-sync")


def _failover_event(tmp_path) -> dict:
    return agent.transition_event(_agent_settings(tmp_path, None), "MASTER")


def _agent_settings(tmp_path, stream: str | None, redis_port: int = 6379) -> agent.Settings:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"pair": "platform-dev-session-store", "node": "a", "peerAddress": "10.0.1.11",
                                "redisPort": redis_port, "vip": {"mode": "l2"}, "stateDir": str(tmp_path / "state"),
                                "eventLog": str(tmp_path / "events.jsonl"), "region": REGION, "auditStream": stream,
                                "redisPasswordFile": str(tmp_path / "redis.pass")}))  # fmt: skip
    (tmp_path / "state").mkdir(exist_ok=True)
    return agent.Settings.load(str(path))


def _matches(hive: str, value) -> bool:
    kinds = {"string": str, "int": int, "bigint": int, "boolean": bool}
    if hive in kinds:
        return isinstance(value, kinds[hive]) and (hive == "boolean" or not isinstance(value, bool))
    if hive == "double":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hive.startswith("array<"):
        return isinstance(value, list) and all(_matches(hive[6:-1], item) for item in value)
    return hive.startswith("struct<") and isinstance(value, dict)


def test_the_table_types_every_field_each_source_writes_and_no_column_is_dead(tmp_path):
    columns = {name: kind for name, kind, _ in audit.COLUMNS}
    events = {"inference": _server_event(), "mirror": _mirror_event(), "failover": _failover_event(tmp_path)}
    filled: set[str] = set()
    for source, event in events.items():
        assert event["audit"] == audit.SCHEMA and event["event"].split(".")[0] == source
        assert source in audit.SOURCES
        for key, value in event.items():
            column = key.lower()  # the SerDe is case-insensitive
            assert column in columns, f"{source}: {key} has no column"
            assert value is None or _matches(columns[column], value), f"{source}: {key}={value!r} is not {columns[column]}"
            filled.add(column)
        for common in ("audit", "event", "time", "subject", "resource"):
            assert event.get(common), f"{source} lacks {common}"
        datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ")  # UTC, to the millisecond
    assert set(columns) - filled == {"kubernetes"}  # Fluent Bit adds it; the failover agent has none


@given(source=st.sampled_from(audit.SOURCES), when=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2100, 12, 31)))
def test_the_projection_template_names_every_prefix_firehose_writes(source, when):
    written = evaluate_prefix(firehose.AUDIT_PREFIX, when.replace(tzinfo=UTC), {"source": source})
    projected = (audit.location_template("b").replace("${source}", source).replace("${year}", f"{when:%Y}")
                 .replace("${month}", f"{when:%m}").replace("${day}", f"{when:%d}"))  # fmt: skip
    assert projected == f"s3://b/{written}"
    parameters = audit.projection("b")
    assert parameters["projection.source.values"].split(",") == list(audit.SOURCES)
    low, high = map(int, parameters["projection.year.range"].split(","))
    assert low <= when.year <= high and parameters["projection.month.digits"] == parameters["projection.day.digits"] == "2"


def test_glue_takes_the_table_and_athena_the_workgroup_and_saved_queries(aws):
    bucket = "platform-dev-audit"
    aws["glue"].create_database(DatabaseInput={"Name": "platform_dev_audit"})
    aws["glue"].create_table(DatabaseName="platform_dev_audit", TableInput=audit.table_input(bucket))
    table = aws["glue"].get_table(DatabaseName="platform_dev_audit", Name=audit.TABLE)["Table"]
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == [(n, t) for n, t, _ in audit.COLUMNS]
    assert [(c["Name"], c["Type"]) for c in table["PartitionKeys"]] == [(n, t) for n, t, _ in audit.PARTITION_KEYS]
    assert table["Parameters"]["storage.location.template"] == audit.location_template(bucket)
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    aws["athena"].create_work_group(Name="platform-dev-audit", Configuration={
        "EnforceWorkGroupConfiguration": True, "BytesScannedCutoffPerQuery": 100 * 1024**3,
        "ResultConfiguration": {"OutputLocation": "s3://platform-dev-logs/athena-results/",
                                "EncryptionConfiguration": {"EncryptionOption": "SSE_KMS", "KmsKey": "arn:aws:kms:k"}}})  # fmt: skip
    for name, (description, sql) in audit.QUERIES.items():
        aws["athena"].create_named_query(Name=name, Description=description, Database="platform_dev_audit",
                                         QueryString=sql, WorkGroup="platform-dev-audit")  # fmt: skip
    saved = aws["athena"].list_named_queries(WorkGroup="platform-dev-audit")["NamedQueryIds"]
    assert len(saved) == len(audit.QUERIES)


def test_mirror_and_failover_events_land_locked_under_their_source(aws, firehose_semantics, local_redis, tmp_path):  # noqa: F811
    bucket, stream = create_audit_stream(aws)
    # The mirror's event travels as a log line of the sync pod; the agent puts its own.
    mirror = _mirror_event()
    aws["firehose"].put_record(DeliveryStreamName=stream,
                               Record={"Data": shipped(mirror, pod="mirror-sync-29000000-abcde", namespace="model-mirror")})  # fmt: skip
    settings = _agent_settings(tmp_path, stream, local_redis)
    assert agent.on_state(settings, "MASTER", mover=None, firehose=aws["firehose"]) == 0  # promoted, then audited
    now = utc_now()
    objects = landed(aws["s3"], bucket)
    day = {"year": f"{now:%Y}", "month": f"{now:%m}", "day": f"{now:%d}"}
    assert sorted(partition_of(key)["source"] for key in objects) == ["failover", "mirror"]
    for key, events in objects.items():
        assert partition_of(key) == {"source": partition_of(key)["source"], **day}
        [event] = events
        assert event["event"].startswith(partition_of(key)["source"] + ".")
        version = aws["s3"].head_object(Bucket=bucket, Key=key)
        assert version["ObjectLockMode"] == "GOVERNANCE"  # write-once: the stream can't be used to rewrite history
        with pytest.raises(aws["s3"].exceptions.ClientError, match="AccessDenied"):
            aws["s3"].delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
    [failover] = next(events for key, events in objects.items() if "source=failover" in key)
    assert (failover["node"], failover["state"], failover["resource"]) == ("a", "MASTER", "platform-dev-session-store")
    [published] = next(events for key, events in objects.items() if "source=mirror" in key)
    assert published["resource"] == f"acme/tiny@{COMMIT}" and published["kubernetes"]["namespace_name"] == "model-mirror"

    # The saved query security runs over what landed.
    connection = athena_table(objects, tmp_path / "athena")
    _, sql = audit.QUERIES["publishes-and-failovers"]
    rows = connection.execute(sql, [now.year]).fetchall()
    assert sorted((row[1], row[3]) for row in rows) == [
        ("failover.transition", "platform-dev-session-store"), ("mirror.publish", f"acme/tiny@{COMMIT}")]
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)  # in order of time
    assert connection.execute(sql, [now.year + 1]).fetchall() == []  # the year partition is honoured


def test_an_event_firehose_refuses_stays_in_the_node_event_log_and_the_takeover_stands(aws, local_redis, tmp_path):
    settings = _agent_settings(tmp_path, "no-such-stream", local_redis)
    assert agent.on_state(settings, "MASTER", mover=None, firehose=aws["firehose"]) == 0
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    [undelivered] = [e for e in events if e["event"] == "audit_undelivered"]
    assert undelivered["record"]["event"] == "failover.transition" and undelivered["record"]["state"] == "MASTER"
    assert "ResourceNotFoundException" in undelivered["error"]
    assert [e["event"] for e in events].index("reconciled") < [e["event"] for e in events].index("audit_undelivered")


def test_without_an_audit_stream_the_agent_makes_no_audit_call(tmp_path):
    class NoCalls:
        def put_record(self, **kwargs):
            raise AssertionError("no audit stream configured, yet a put")

    assert agent.audit_transition(_agent_settings(tmp_path, None), "MASTER", NoCalls()) is False

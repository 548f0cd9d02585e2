"""Audit events on the real demo server: one per API request, identifiers and counts only."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from inference_server import audit

from ..storage.firehose_semantics import firehose_semantics  # noqa: F401
from .conftest import MODEL, auth_headers, start_server

PROMPT = "zebra-quartz-7781 confidential prompt"


@pytest.fixture(scope="module")
def audited(demo_dir, tmp_path_factory):
    # --log-level warning (start_server's): audit events are written anyway
    running = start_server(demo_dir, tmp_path_factory.mktemp("audit-logs"), "--tenant-claim", "tenant",
                           "--tenant-requests-per-minute", "60", "--tenant-burst", "2")  # fmt: skip
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _events(server, request_id: str) -> list[dict]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        found = [line for line in lines if line.get("audit") and line.get("requestId") == request_id]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_each_request_is_audited_with_who_what_model_and_counts_never_the_text(audited):
    headers = {**auth_headers(tenant="acme", sub="user-17"), "X-Request-ID": "audit-1",
               "X-Forwarded-For": "198.51.100.9, 203.0.113.50"}  # fmt: skip
    response = httpx.post(f"{audited.url}/v1/completions", headers=headers, timeout=30,
                          json={"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "temperature": 0})  # fmt: skip
    assert response.status_code == 200
    completion = response.json()["choices"][0]["text"]
    [event] = _events(audited, "audit-1")
    assert event["event"] == audit.EVENT and event["route"] == "/v1/completions" and event["status"] == 200
    assert (event["tenant"], event["subject"], event["model"]) == ("acme", "user-17", MODEL)
    assert event["tokensIn"] == response.json()["usage"]["prompt_tokens"] and event["tokensOut"] == 3
    assert event["clientIp"] == "203.0.113.50"  # the entry our ALB appended, not what the client claimed
    log = audited.log.read_text()
    assert PROMPT not in log and "zebra" not in log  # no prompt text anywhere in the logs
    assert completion.strip() and completion not in json.dumps(event)  # nor the completion in the event


def test_refusals_and_streams_are_audited_too(audited):
    for index in range(3):  # burst 2: the third is refused with 429
        headers = {**auth_headers(tenant="globex"), "X-Request-ID": f"audit-q{index}", "X-Real-IP": "192.0.2.44"}
        httpx.post(f"{audited.url}/v1/chat/completions", headers=headers, timeout=30,
                   json={"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2,
                         "stream": index == 0})  # fmt: skip
    streamed, _, refused = (_events(audited, f"audit-q{i}")[0] for i in range(3))
    assert streamed["status"] == 200 and streamed["tokensOut"] == 2 and streamed["clientIp"] == "192.0.2.44"
    assert refused["status"] == 429 and refused["tenant"] == "globex" and refused["tokensOut"] == 0
    unauthenticated = httpx.post(f"{audited.url}/v1/completions", headers={"X-Request-ID": "audit-anon"}, timeout=30,
                                 json={"model": MODEL, "prompt": PROMPT})  # fmt: skip
    assert unauthenticated.status_code == 401
    [anon] = _events(audited, "audit-anon")
    assert anon["status"] == 401 and anon["subject"] is None and anon["clientIp"] == "127.0.0.1"
    assert PROMPT not in audited.log.read_text()


def test_the_client_address_follows_the_entries_rules():
    assert audit.client_ip({b"x-real-ip": b"10.0.0.9", b"x-forwarded-for": b"1.1.1.1"}, "127.0.0.1") == "10.0.0.9"
    assert audit.client_ip({b"x-forwarded-for": b"6.6.6.6, 203.0.113.1"}, "10.1.2.3") == "203.0.113.1"
    assert audit.client_ip({}, "10.1.2.3") == "10.1.2.3"


def test_the_events_land_in_the_locked_audit_bucket_and_the_finance_query_sums_them(audited, firehose_semantics,  # noqa: F811
                                                                                   tmp_path):  # fmt: skip
    """The server's real audit lines, shipped as Fluent Bit ships them, through the audit stream on moto."""
    import boto3
    from moto import mock_aws

    from components.storage import audit as trail

    from ..storage.audit_trail import athena_table, create_audit_stream, landed, partition_of, shipped
    from ..storage.firehose_semantics import utc_now

    asked = {"initech": 2, "umbrella": 1}  # within the fixture's burst of 2 per tenant
    ids = []
    for tenant, count in asked.items():
        for index in range(count):
            ids.append(f"audit-land-{tenant}-{index}")
            response = httpx.post(f"{audited.url}/v1/completions", timeout=30,
                                  headers={**auth_headers(tenant=tenant, sub=f"{tenant}-app"), "X-Request-ID": ids[-1]},
                                  json={"model": MODEL, "prompt": PROMPT, "max_tokens": 2 + index, "temperature": 0})  # fmt: skip
            assert response.status_code == 200
    lines = [event for request_id in ids for event in _events(audited, request_id)]
    assert len(lines) == len(ids)
    with mock_aws():
        aws = {name: boto3.client(name, region_name="us-east-1") for name in ("s3", "firehose", "iam", "kms")}
        bucket, stream = create_audit_stream(aws)
        result = aws["firehose"].put_record_batch(DeliveryStreamName=stream, Records=[{"Data": shipped(e)} for e in lines])
        assert result["FailedPutCount"] == 0
        now = utc_now()
        objects = landed(aws["s3"], bucket)
        [(key, events)] = objects.items()
        assert partition_of(key) == {"source": "inference", "year": f"{now:%Y}", "month": f"{now:%m}", "day": f"{now:%d}"}
        assert sorted(e["requestId"] for e in events) == sorted(ids)
        assert aws["s3"].head_object(Bucket=bucket, Key=key)["ObjectLockMode"] == "GOVERNANCE"
    assert not any("zebra" in json.dumps(e) for e in events)  # the delivered object holds no prompt text

    connection = athena_table(objects, tmp_path / "athena")
    _, sql = trail.QUERIES["tokens-by-tenant"]
    rows = {row[0]: row[2:] for row in connection.execute(sql, [now.year, now.month]).fetchall()}
    expected = {tenant: (count, sum(e["tokensIn"] for e in lines if e["tenant"] == tenant),
                         sum(e["tokensOut"] for e in lines if e["tenant"] == tenant)) for tenant, count in asked.items()}  # fmt: skip
    assert rows == expected and expected["initech"][2] == 2 + 3  # max_tokens 2 and 3, greedy to the limit

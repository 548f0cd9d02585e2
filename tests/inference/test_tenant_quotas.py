"""Per-tenant quotas: token buckets (pure, property-tested) and on the real demo server."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_server.quota import Bucket, Limit, TenantQuotas

from .conftest import MODEL, auth_headers, start_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_gets_its_burst_then_its_rate_and_others_are_untouched():
    clock = FakeClock()
    quotas = TenantQuotas(claim="sub", default=Limit(per_minute=60, burst=3), clock=clock)
    assert [quotas.check("a") for _ in range(3)] == [0, 0, 0]
    assert quotas.check("a") == 1  # one token a second: due in 1 s
    assert quotas.check("b") == 0  # another tenant has its own bucket
    clock.now += 1.0
    assert quotas.check("a") == 0 and quotas.check("a") == 1


def test_overrides_and_retry_after_round_up():
    clock = FakeClock()
    quotas = TenantQuotas(claim="tenant", default=Limit(6, 1), overrides={"big": Limit(600, 100)}, clock=clock)
    assert quotas.check("small") == 0
    assert quotas.check("small") == 10  # 6 a minute: one every 10 s
    clock.now += 9.5
    assert quotas.check("small") == 1  # 0.5 s left still says 1 (never 0: that would mean "go")
    assert all(quotas.check("big") == 0 for _ in range(100))
    assert quotas.tenant({"tenant": "big"}) == "big" and quotas.tenant({"sub": "x"}) is None


@settings(max_examples=1000, deadline=None)
@given(per_minute=st.integers(1, 6000), burst=st.integers(1, 200),
       gaps=st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=300))  # fmt: skip
def test_never_more_than_burst_plus_rate_times_elapsed(per_minute, burst, gaps):
    """Over any run, admitted requests <= burst + rate * elapsed: the bucket's promise."""
    clock = FakeClock()
    quotas = TenantQuotas(claim="sub", default=Limit(per_minute, burst), clock=clock)
    start, admitted = clock.now, 0
    for gap in gaps:
        clock.now += gap
        wait = quotas.check("t")
        admitted += wait == 0
        assert admitted <= burst + (clock.now - start) * per_minute / 60 + 1e-6
        if wait:  # waiting as told is always enough for the next request
            clock.now += wait
            assert quotas.check("t") == 0
            admitted += 1


def test_waiting_exactly_the_retry_after_is_enough_despite_rounding():
    """Found by the property above in CI: at a clock reading of 1000.1, (1000.1 + 24) - 1000.1 is
    23.99999999999989, so 0.6 tokens refilled for the 24 s we asked for came to 0.999999999999998."""
    limit, bucket = Limit(per_minute=1, burst=1), Bucket(tokens=0.6, updated=1000.1)
    wait = bucket.take(limit, 1000.1)
    assert math.ceil(wait) == 24
    assert bucket.take(limit, 1000.1 + 24) == 0.0


def test_idle_tenants_are_forgotten_only_when_full():
    clock = FakeClock()
    quotas = TenantQuotas(claim="sub", default=Limit(60, 2), clock=clock, max_tenants=2)
    quotas.check("a"), quotas.check("b")
    quotas.check("c")  # a and b are not full yet: nothing to forget, c joins
    assert set(quotas._buckets) == {"a", "b", "c"}
    clock.now += 10
    quotas.check("d")  # all refilled: forgotten, which changes nothing for them
    assert set(quotas._buckets) == {"d"}


@pytest.fixture(scope="module")
def quota_server(demo_dir, tmp_path_factory):
    overrides = json.dumps({"big-tenant": {"requestsPerMinute": 6000, "burst": 50}})
    running = start_server(demo_dir, tmp_path_factory.mktemp("quota-logs"), "--tenant-claim", "tenant",
                           "--tenant-requests-per-minute", "6", "--tenant-burst", "3", "--tenant-overrides", overrides)  # fmt: skip
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _complete(server, **claims: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/completions", headers=auth_headers(**claims), timeout=30,
                      json={"model": MODEL, "prompt": "quota", "max_tokens": 2})  # fmt: skip


def test_one_tenant_exhausts_its_quota_while_another_is_served(quota_server):
    for _ in range(3):  # the burst
        assert _complete(quota_server, tenant="acme").status_code == 200
    refused = _complete(quota_server, tenant="acme")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "tenant_quota" and "acme" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 10  # 6 a minute: one every 10 s
    for _ in range(3):  # another tenant, same server, same moment: its own full burst
        assert _complete(quota_server, tenant="globex").status_code == 200
    assert all(_complete(quota_server, tenant="big-tenant").status_code == 200 for _ in range(10))  # its override
    metrics = httpx.get(f"{quota_server.url}/metrics").text
    assert 'inference_rejected_requests_total{reason="tenant_quota"} 1.0' in metrics


def test_a_token_without_the_tenant_claim_is_refused(quota_server):
    response = _complete(quota_server)  # no `tenant` claim
    assert response.status_code == 403 and response.json()["error"]["code"] == "no_tenant"


def test_quotas_refuse_to_start_without_auth(demo_dir, tmp_path):
    running = start_server(demo_dir, tmp_path, "--tenant-requests-per-minute", "6", auth=False)
    assert running.process.wait(60) != 0
    assert "tenant quotas need authentication" in running.log.read_text()

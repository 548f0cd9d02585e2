"""Real failovers in network namespaces, with the configs the component renders.

Keepalived and Redis from Debian, the real node agent, an EC2 endpoint (moto) in the
client namespace. Speed is measured in bench/failover_bench.py; here each scenario must
end with exactly one primary holding the VIP (locally and in EC2), the other node
replicating from it, and no write lost that a replica had acknowledged (WAIT 1).
"""

from __future__ import annotations

import json

import pytest

from .lab import SCENARIOS, Lab, ours, run_scenario

SEED_LIMIT_SECONDS = 30  # the seeds' failover limit; bench/ measures the real times


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_failover_scenario(netns_tools, tmp_path, scenario):
    with Lab(tmp_path, ours()) as lab:
        result = run_scenario(lab, scenario)
        events = {node: [json.loads(line) for line in (tmp_path / node / "events.jsonl").read_text().splitlines()]
                  for node in "ab"}  # fmt: skip
    assert result["acked"] > 50, result  # the client really wrote through the VIP before and during the fault
    assert result["lost"] == 0, result
    if scenario == "split-brain":
        # Both held MASTER while VRRP was cut (what the split-brain alarm sees), and after
        # healing the higher-priority node is the only primary.
        assert result["both_master_after"] < SEED_LIMIT_SECONDS
        assert result["new_primary"] == "a"
    else:
        assert result["new_primary"] != result["old_primary"]
        assert result["failover_seconds"] < SEED_LIMIT_SECONDS
        promoted = [e for e in events[result["new_primary"]] if e["event"] == "redis_promoted"]
        moved = [e for e in events[result["new_primary"]] if e["event"] == "vip_moved"]
        assert promoted and moved and moved[-1]["mode"] == "secondaryIp"
    # The old primary came back as a replica (nopreempt: no flapping back).
    following = [e for e in events[result["old_primary"]] if e["event"] == "redis_following"]
    assert scenario == "split-brain" or following


def test_lab_records_each_vip_move_in_ec2(netns_tools, tmp_path):
    """The agents' EC2 calls reach the endpoint (the stub that records time), one per takeover."""
    with Lab(tmp_path, ours()) as lab:
        first = lab.wait_settled()
        calls = lab.ec2_assignments()
        assert [call["eni"] for call in calls] == [lab.eni[first]]
        assert calls[0]["addresses"] == ["10.99.0.12"]

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
    """Every EC2 call the agents make is one takeover they logged, and the last lands on the primary.

    At start-up both nodes can hold MASTER for a moment (0.1 s adverts): both move the VIP,
    then the reconciler moves it back onto the primary. Any number of moves is right, as long
    as each is exactly one call (no retried or duplicate calls) from a node that was MASTER.
    """
    with Lab(tmp_path, ours()) as lab:
        first = lab.wait_settled()

        def attempts(node: str) -> int:  # a move is logged once confirmed (or given up): it may lag the call
            lines = (tmp_path / node / "events.jsonl").read_text().splitlines()
            return sum(json.loads(line)["event"] in ("vip_moved", "vip_move_unconfirmed") for line in lines)

        def calls_by_node() -> dict[str, int]:
            enis = [call["eni"] for call in lab.ec2_assignments()]
            return {node: enis.count(eni) for node, eni in lab.eni.items()}

        lab._wait(lambda: all(calls_by_node()[node] == attempts(node) for node in "ab"),
                  "each EC2 call matched by the move its agent logged", timeout=20)  # fmt: skip
        calls = lab.ec2_assignments()
        assert calls and calls[-1]["eni"] == lab.eni[first] and lab.vip_holder_in_ec2() == first
        assert all(call["addresses"] == ["10.99.0.12"] for call in calls)
        for node, count in calls_by_node().items():
            events = [json.loads(line) for line in (tmp_path / node / "events.jsonl").read_text().splitlines()]
            assert count == 0 or any(e["event"] == "state" and e["state"] == "MASTER" for e in events), node

"""Subnet allocation: exact layouts, and properties over arbitrary inputs."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from components.network.cidr import CidrAllocationError, allocate_subnets

TIERS = {"private": 19, "public": 24}


def test_layout_of_a_three_az_16():
    plans = allocate_subnets("10.0.0.0/16", ["a", "b", "c"], TIERS)
    assert [(p.tier, p.az, str(p.cidr)) for p in plans] == [
        ("private", "a", "10.0.0.0/19"),
        ("private", "b", "10.0.32.0/19"),
        ("private", "c", "10.0.64.0/19"),
        ("public", "a", "10.0.128.0/24"),
        ("public", "b", "10.0.129.0/24"),
        ("public", "c", "10.0.130.0/24"),
    ]


def test_a_tier_block_larger_than_the_vpc_is_refused():
    with pytest.raises(CidrAllocationError, match=r"4 private subnets of /21 need a /19 block.*must be /22 to /28"):
        allocate_subnets("10.0.0.0/20", ["a", "b"], {"private": 21, "public": 24})


def test_tiers_that_together_overflow_the_vpc_are_refused_with_the_numbers():
    with pytest.raises(CidrAllocationError, match=r"need 5120 addresses .* 10.0.0.0/20 has 4096"):
        allocate_subnets("10.0.0.0/20", ["a", "b"], {"private": 22, "public": 24})


def test_more_azs_than_slots_is_refused():
    with pytest.raises(CidrAllocationError, match="5 AZs do not fit 4 AZ slots"):
        allocate_subnets("10.0.0.0/16", list("abcde"), TIERS)


def test_repeated_az_is_refused():
    with pytest.raises(CidrAllocationError, match="repeat"):
        allocate_subnets("10.0.0.0/16", ["a", "a"], TIERS)


vpc_cidrs = st.builds(
    lambda base, prefix: ipaddress.IPv4Network((base << 8 & ~((1 << (32 - prefix)) - 1) & 0xFFFFFFFF, prefix)),
    st.integers(min_value=0x0A0000, max_value=0x0AFFFF),
    st.integers(min_value=16, max_value=24),
)
TIER_NAMES = ["private", "public", "intra", "data"]


@st.composite
def layouts(draw, likely_to_fit: bool):
    """(vpc, azs, tiers, az_slots). likely_to_fit keeps tier blocks inside the VPC."""
    vpc = draw(vpc_cidrs)
    az_slots = draw(st.integers(min_value=1, max_value=8))
    azs = draw(st.lists(st.sampled_from(list("abcdefgh")), min_size=1, max_size=az_slots, unique=True))
    bits = max(0, (az_slots - 1).bit_length())
    smallest = min(28, vpc.prefixlen + bits + (2 if likely_to_fit else 0)) if likely_to_fit else 16
    names = draw(st.lists(st.sampled_from(TIER_NAMES), min_size=1, max_size=4, unique=True))
    tiers = {name: draw(st.integers(min_value=smallest, max_value=28)) for name in names}
    return vpc, azs, tiers, az_slots


def _allocate_or_none(vpc, azs, tiers, az_slots):
    try:
        return allocate_subnets(vpc, azs, tiers, az_slots)
    except CidrAllocationError:
        return None


@given(layouts(likely_to_fit=True))
def test_subnets_are_disjoint_inside_the_vpc_and_sized_as_asked(layout):
    vpc, azs, tiers, az_slots = layout
    plans = _allocate_or_none(vpc, azs, tiers, az_slots)
    assume(plans is not None)
    assert len(plans) == len(azs) * len(tiers)
    assert {(p.tier, p.az) for p in plans} == {(t, a) for t in tiers for a in azs}
    for plan in plans:
        assert plan.cidr.subnet_of(vpc)
        assert plan.cidr.prefixlen == tiers[plan.tier]
    cidrs = sorted(p.cidr for p in plans)
    for first, second in zip(cidrs, cidrs[1:]):
        assert not first.overlaps(second), (first, second)


@given(layouts(likely_to_fit=False))
def test_allocation_succeeds_exactly_when_the_tier_blocks_fit(layout):
    vpc, azs, tiers, az_slots = layout
    slot_count = 1 << max(0, (az_slots - 1).bit_length())
    blocks_fit = all(prefix - (slot_count.bit_length() - 1) >= vpc.prefixlen for prefix in tiers.values())
    total = sum(slot_count * 2 ** (32 - prefix) for prefix in tiers.values())
    fits = blocks_fit and total <= vpc.num_addresses
    assert (_allocate_or_none(vpc, azs, tiers, az_slots) is not None) == fits


@given(layouts(likely_to_fit=True))
def test_allocation_is_deterministic(layout):
    vpc, azs, tiers, az_slots = layout
    first = _allocate_or_none(vpc, azs, tiers, az_slots)
    assume(first is not None)
    assert allocate_subnets(str(vpc), list(azs), dict(tiers), az_slots) == first


@given(layouts(likely_to_fit=True))
def test_appending_an_az_never_moves_an_existing_subnet(layout):
    vpc, azs, tiers, az_slots = layout
    """Moving a subnet replaces it (and its nodes); growth must not do that."""
    assume(2 <= len(azs) <= az_slots)
    grown = _allocate_or_none(vpc, azs, tiers, az_slots)
    assume(grown is not None)
    before = allocate_subnets(vpc, azs[:-1], tiers, az_slots)
    grown_by_key = {(p.tier, p.az): p.cidr for p in grown}
    for plan in before:
        assert grown_by_key[(plan.tier, plan.az)] == plan.cidr

"""Subnet CIDR allocation: a pure function, property-tested (tests/test_cidr.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class CidrAllocationError(ValueError):
    """The requested subnets do not fit in the VPC CIDR."""


@dataclass(frozen=True)
class SubnetPlan:
    tier: str
    az: str
    cidr: ipaddress.IPv4Network


def _slot_bits(az_slots: int) -> int:
    return max(0, (az_slots - 1).bit_length())


def allocate_subnets(
    vpc_cidr: ipaddress.IPv4Network | str,
    azs: Sequence[str],
    tier_prefix_lengths: Mapping[str, int],
    az_slots: int = 4,
) -> list[SubnetPlan]:
    """One subnet per (tier, AZ) inside ``vpc_cidr``, with no overlap.

    Each tier gets one block with room for ``az_slots`` subnets (rounded up to a
    power of two); the AZ at position ``i`` of ``azs`` always gets slot ``i`` of
    its tier's block. So adding an AZ (up to ``az_slots``) never moves an existing
    subnet: a subnet whose CIDR changed would be replaced, taking its nodes with it.
    Tier blocks are placed largest first at the lowest free address; with
    power-of-two blocks in non-increasing size every block lands aligned and no
    space is wasted, so allocation succeeds exactly when the blocks fit the VPC.
    """
    vpc = ipaddress.IPv4Network(vpc_cidr)
    if len(set(azs)) != len(azs):
        raise CidrAllocationError(f"availability zones repeat: {list(azs)}")
    if not 1 <= len(azs) <= az_slots:
        raise CidrAllocationError(f"{len(azs)} AZs do not fit {az_slots} AZ slots")
    bits = _slot_bits(az_slots)
    blocks = []
    for tier_index, (tier, prefix) in enumerate(tier_prefix_lengths.items()):
        block_prefix = prefix - bits
        if not (vpc.prefixlen <= block_prefix and prefix <= 28):
            raise CidrAllocationError(
                f"{az_slots} {tier} subnets of /{prefix} need a /{block_prefix} block, "
                f"which does not fit in {vpc} (subnets must be /{vpc.prefixlen + bits} to /28)"
            )
        blocks.append((block_prefix, tier_index, tier, prefix))
    needed = sum(2 ** (32 - block_prefix) for block_prefix, *_ in blocks)
    if needed > vpc.num_addresses:
        raise CidrAllocationError(
            f"the subnet tiers need {needed} addresses ({az_slots} AZ slots each) but {vpc} has "
            f"{vpc.num_addresses}; use a larger VPC CIDR or longer subnet prefixes"
        )
    cursor = int(vpc.network_address)
    tier_blocks: dict[str, tuple[ipaddress.IPv4Network, int]] = {}
    for block_prefix, _, tier, prefix in sorted(blocks):  # largest block first, then tier order
        block = ipaddress.IPv4Network((cursor, block_prefix))
        tier_blocks[tier] = (block, prefix)
        cursor += block.num_addresses
    plans = []
    for tier in tier_prefix_lengths:
        block, prefix = tier_blocks[tier]
        size = 2 ** (32 - prefix)
        for slot, az in enumerate(azs):
            start = int(block.network_address) + slot * size
            plans.append(SubnetPlan(tier=tier, az=az, cidr=ipaddress.IPv4Network((start, prefix))))
    return plans

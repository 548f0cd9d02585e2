"""Tunnel decisions of the site-to-site VPN: pure functions, tested directly (tests/vpn/).

What lives here is shared by the AWS side (the VPN connection's tunnel options), the
on-prem render (strongSwan, FRR) and the lab that emulates AWS's endpoints, so the
three cannot disagree: inside-CIDR rules, AWS-name → strongSwan-name mapping of the
proposals, inside addresses, and how long each side takes to notice a dead tunnel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
# Inside CIDRs AWS refuses for a tunnel (Site-to-Site VPN user guide, "Tunnel options").
AWS_RESERVED_INSIDE_CIDRS = tuple(
    ipaddress.IPv4Network(cidr)
    for cidr in ("169.254.0.0/30", "169.254.1.0/30", "169.254.2.0/30", "169.254.3.0/30",
                 "169.254.4.0/30", "169.254.5.0/30", "169.254.169.252/30")
)  # fmt: skip

# AWS's algorithm names → strongSwan's keywords (swanctl.conf proposals).
ENCRYPTION = {"AES256-GCM-16": "aes256gcm16", "AES128-GCM-16": "aes128gcm16", "AES256": "aes256", "AES128": "aes128"}
INTEGRITY = {"SHA2-256": "sha256", "SHA2-384": "sha384", "SHA2-512": "sha512"}
DH_GROUPS = {19: "ecp256", 20: "ecp384", 21: "ecp521"}

# AWS's BGP speakers (VGW / transit gateway) keep a 30 s hold time; 10 s keepalives.
AWS_BGP_KEEPALIVE_SECONDS = 10
AWS_BGP_HOLD_SECONDS = 30
# ASNs AWS refuses for a customer gateway (CreateCustomerGateway).
AWS_RESERVED_CUSTOMER_ASNS = frozenset({7224, 9059, 10124, 17493})


class InsideCidrError(ValueError):
    """A tunnel inside CIDR AWS would refuse."""


def check_inside_cidr(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """A tunnel's inside CIDR: a /30 inside 169.254.0.0/16, not one of AWS's reserved blocks."""
    if cidr.prefixlen != 30:
        raise InsideCidrError(f"{cidr} is a /{cidr.prefixlen}: a tunnel inside CIDR is a /30")
    if not cidr.subnet_of(LINK_LOCAL):
        raise InsideCidrError(f"{cidr} is outside 169.254.0.0/16, where AWS takes tunnel inside CIDRs")
    if cidr in AWS_RESERVED_INSIDE_CIDRS:
        raise InsideCidrError(
            f"{cidr} is reserved by AWS (169.254.0.0/30 to 169.254.5.0/30 and 169.254.169.252/30 are refused)"
        )
    return cidr


def check_distinct_inside_cidrs(cidrs: Sequence[ipaddress.IPv4Network]) -> None:
    """Both tunnels of a connection need their own /30 (the same CIDR twice is refused)."""
    if len(set(cidrs)) != len(cidrs):
        raise InsideCidrError("the two tunnels need different inside CIDRs")


@dataclass(frozen=True)
class InsideAddresses:
    """AWS takes the first host of a tunnel's /30, the customer gateway the second."""

    aws: ipaddress.IPv4Interface
    customer: ipaddress.IPv4Interface


def inside_addresses(cidr: ipaddress.IPv4Network) -> InsideAddresses:
    first, second = list(cidr.hosts())
    return InsideAddresses(aws=ipaddress.IPv4Interface(f"{first}/30"), customer=ipaddress.IPv4Interface(f"{second}/30"))


def _split_by_kind(encryption: Sequence[str]) -> list[list[str]]:
    """The AWS cipher list as strongSwan keywords, AEAD (GCM) and plain apart, in the order the list prefers."""
    if not encryption:
        raise ValueError("no encryption algorithm to propose")
    kinds: dict[bool, list[str]] = {}
    for name in encryption:
        kinds.setdefault("GCM" in name, []).append(ENCRYPTION[name])
    return [ciphers for _, ciphers in kinds.items()]


def _is_aead(ciphers: list[str]) -> bool:
    return "gcm" in ciphers[0]


def ike_proposals(encryption: Sequence[str], integrity: Sequence[str], dh_groups: Sequence[int]) -> list[str]:
    """strongSwan IKE proposals offering exactly what AWS's phase 1 lists allow.

    AEAD ciphers (GCM) carry no integrity algorithm and need a PRF instead, and one
    proposal cannot mix AEAD and plain ciphers: so one proposal per kind, in the
    preference order of the AWS list.
    """
    groups = [DH_GROUPS[g] for g in dh_groups]
    return ["-".join(ciphers + [("prf" if _is_aead(ciphers) else "") + INTEGRITY[i] for i in integrity] + groups)
            for ciphers in _split_by_kind(encryption)]  # fmt: skip


def esp_proposals(encryption: Sequence[str], integrity: Sequence[str], dh_groups: Sequence[int]) -> list[str]:
    """strongSwan ESP proposals for AWS's phase 2 lists; the DH groups are PFS groups (AWS rekeys with PFS)."""
    groups = [DH_GROUPS[g] for g in dh_groups]
    return ["-".join(ciphers + ([] if _is_aead(ciphers) else [INTEGRITY[i] for i in integrity]) + groups)
            for ciphers in _split_by_kind(encryption)]  # fmt: skip


@dataclass(frozen=True)
class Retransmission:
    """charon's IKE retransmission schedule (strongswan.conf ``charon.retransmit_*``).

    An unanswered IKEv2 request (DPD included) is sent ``tries + 1`` times; try *n*
    waits ``timeout * base**n`` seconds. Only after the last wait is the peer dead.
    charon's default (4 s, 1.8, 5 tries) takes 165 s: far too long for a tunnel
    that should fail over to its twin, so the on-prem render sets this one.
    """

    timeout: float = 2.0
    base: float = 1.4
    tries: int = 3

    def give_up_seconds(self) -> float:
        return sum(self.timeout * self.base**n for n in range(self.tries + 1))


ON_PREM_RETRANSMISSION = Retransmission()


def on_prem_dead_peer_seconds(dpd_delay_seconds: int, retransmission: Retransmission = ON_PREM_RETRANSMISSION) -> float:
    """Worst case for the on-prem gateway to declare an AWS endpoint dead and drop that tunnel's SAs.

    Silence for ``dpd_delay`` starts a liveness check, which then runs the whole
    retransmission schedule.
    """
    return dpd_delay_seconds + retransmission.give_up_seconds()


def ike_rekey_time(lifetime_seconds: int, margin_seconds: int) -> int:
    """When the on-prem side starts rekeying: before AWS's lifetime runs out, as AWS itself does."""
    return lifetime_seconds - margin_seconds


def rekey_jitter(margin_seconds: int, fuzz_percentage: int) -> int:
    """Random time subtracted from the rekey time (AWS's "rekey fuzz" over its margin)."""
    return margin_seconds * fuzz_percentage // 100

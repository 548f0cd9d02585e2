"""Tunnel rules (pure) and the VPN config's validation, with property tests."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.config import ConfigError, parse_config
from components.vpn.tunnels import (
    AWS_RESERVED_INSIDE_CIDRS,
    DH_GROUPS,
    ENCRYPTION,
    INTEGRITY,
    InsideCidrError,
    Retransmission,
    check_inside_cidr,
    esp_proposals,
    ike_proposals,
    inside_addresses,
    on_prem_dead_peer_seconds,
)

LINK_LOCAL_BASE = int(ipaddress.IPv4Address("169.254.0.0"))


@given(st.integers(min_value=0, max_value=2**14 - 1))
def test_every_30_in_link_local_space_is_accepted_unless_aws_reserves_it(block):
    cidr = ipaddress.IPv4Network((LINK_LOCAL_BASE + block * 4, 30))
    if cidr in AWS_RESERVED_INSIDE_CIDRS:
        with pytest.raises(InsideCidrError, match="reserved by AWS"):
            check_inside_cidr(cidr)
    else:
        assert check_inside_cidr(cidr) == cidr
        addresses = inside_addresses(cidr)
        # AWS takes the first host, the customer gateway the second; both inside the /30.
        assert int(addresses.aws.ip) + 1 == int(addresses.customer.ip)
        assert addresses.aws.network == addresses.customer.network == cidr


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=8, max_value=32))
def test_anything_not_a_link_local_30_is_refused(address, prefix):
    cidr = ipaddress.IPv4Network((address, prefix), strict=False)
    if prefix == 30 and cidr.subnet_of(ipaddress.IPv4Network("169.254.0.0/16")):
        return
    with pytest.raises(InsideCidrError):
        check_inside_cidr(cidr)


subsets = lambda names: st.lists(st.sampled_from(sorted(names)), min_size=1, unique=True)  # noqa: E731


@given(subsets(ENCRYPTION), subsets(INTEGRITY), st.lists(st.sampled_from(sorted(DH_GROUPS)), min_size=1, unique=True))
def test_proposals_offer_exactly_the_aws_lists(encryption, integrity, groups):
    """Round trip: every keyword of the strongSwan proposals maps back to the AWS lists, and all are there."""
    for proposals, phase in ((ike_proposals(encryption, integrity, groups), 1), (esp_proposals(encryption, integrity, groups), 2)):
        ciphers, macs, dh = set(), set(), set()
        for proposal in proposals:
            tokens = proposal.split("-")
            aead = any("gcm" in t for t in tokens)
            assert all(("gcm" in t) == aead for t in tokens if t in ENCRYPTION.values()), "AEAD and CBC never mixed"
            for token in tokens:
                if token in ENCRYPTION.values():
                    ciphers.add(token)
                elif token.removeprefix("prf") in INTEGRITY.values():
                    assert aead == token.startswith("prf"), "GCM takes a PRF, CBC an HMAC"
                    macs.add(token.removeprefix("prf"))
                else:
                    dh.add(token)
        assert ciphers == {ENCRYPTION[e] for e in encryption}
        assert dh == {DH_GROUPS[g] for g in groups}
        aead_only = all("GCM" in e for e in encryption)
        if phase == 2 and aead_only:
            assert macs == set()  # ESP with GCM carries no integrity algorithm
        else:
            assert macs == {INTEGRITY[i] for i in integrity}
        # The preferred cipher's kind comes first.
        assert ("gcm" in proposals[0]) == ("GCM" in encryption[0])


def test_the_default_proposals_read_as_strongswan_writes_them():
    assert ike_proposals(["AES256-GCM-16", "AES256"], ["SHA2-256", "SHA2-384"], [19, 20, 21]) == [
        "aes256gcm16-prfsha256-prfsha384-ecp256-ecp384-ecp521", "aes256-sha256-sha384-ecp256-ecp384-ecp521"]
    assert esp_proposals(["AES256-GCM-16", "AES256"], ["SHA2-256"], [20]) == ["aes256gcm16-ecp384", "aes256-sha256-ecp384"]


def test_dead_peer_detection_runs_the_whole_retransmission_schedule():
    schedule = Retransmission(timeout=2.0, base=1.4, tries=3)
    assert schedule.give_up_seconds() == pytest.approx(2.0 + 2.8 + 3.92 + 5.488)
    assert on_prem_dead_peer_seconds(10, schedule) == pytest.approx(10 + 14.208)
    assert Retransmission(4.0, 1.8, 5).give_up_seconds() == pytest.approx(165, abs=0.1)  # charon's default


# --------------------------------------------------------------------------- config errors

BASE = {"platform:environment": "dev", "platform:aws": '{"region": "us-east-1"}',
        "platform:tags": '{"costCenter": "ml", "owner": "team@example.com"}'}  # fmt: skip
TUNNELS = [{"insideCidr": "169.254.10.0/30"}, {"insideCidr": "169.254.10.4/30"}]


def _vpn(**changes) -> dict[str, str]:
    import json

    vpn = {"customerGateway": {"ipAddress": "203.0.113.10"}, "onPremCidrs": ["192.168.40.0/24"], "tunnels": TUNNELS}
    vpn.update(changes)
    return {**BASE, "platform:vpn": json.dumps(vpn)}


def _problems(raw: dict[str, str], secrets: set[str] = frozenset()) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, secrets, "stacks/Pulumi.dev.yaml")
    return str(info.value)


def test_a_valid_vpn_parses_with_every_tunnel_option_defaulted():
    config = parse_config(_vpn(), set(), "stacks/Pulumi.dev.yaml")
    ike = config.vpn.ike
    assert (ike.phase1_encryption, ike.phase1_dh_groups, ike.dpd_timeout_action) == (["AES256-GCM-16", "AES256"], [19, 20, 21], "restart")
    assert config.vpn.routing == "bgp" and config.vpn.tunnels[0].pre_shared_key is None


@pytest.mark.parametrize("changes, expected", [
    ({"tunnels": [{"insideCidr": "169.254.10.0/29"}, TUNNELS[1]]}, "platform:vpn.tunnels[0].insideCidr = \"169.254.10.0/29\": 169.254.10.0/29 is a /29"),
    ({"tunnels": [{"insideCidr": "169.254.3.0/30"}, TUNNELS[1]]}, "platform:vpn.tunnels[0].insideCidr = \"169.254.3.0/30\": 169.254.3.0/30 is reserved by AWS"),
    ({"tunnels": [{"insideCidr": "10.0.0.0/30"}, TUNNELS[1]]}, "10.0.0.0/30 is outside 169.254.0.0/16"),
    ({"tunnels": [TUNNELS[0], TUNNELS[0]]}, "platform:vpn.tunnels[1].insideCidr = \"169.254.10.0/30\": the two tunnels need different inside CIDRs"),
    ({"tunnels": [TUNNELS[0]]}, "platform:vpn.tunnels"),
    ({"customerGateway": {"ipAddress": "10.1.2.3"}}, "platform:vpn.customerGateway.ipAddress = \"10.1.2.3\": must be the gateway's public"),
    ({"customerGateway": {"ipAddress": "203.0.113.10", "bgpAsn": 7224}}, "platform:vpn.customerGateway.bgpAsn = 7224: is reserved by AWS"),
    ({"customerGateway": {"ipAddress": "203.0.113.10", "bgpAsn": 64512}}, "platform:vpn.customerGateway.bgpAsn = 64512: must differ from amazonSideAsn"),
    ({"amazonSideAsn": 65535}, "platform:vpn.amazonSideAsn = 65535: must be a private ASN"),
    ({"onPremCidrs": ["192.168.40.0/24", "192.168.40.128/25"]}, "platform:vpn.onPremCidrs[1] = \"192.168.40.128/25\": overlaps 192.168.40.0/24"),
    ({"onPremCidrs": ["10.0.8.0/24"]}, "platform:vpn.onPremCidrs[0] = \"10.0.8.0/24\": overlaps platform:network.vpcCidr (10.0.0.0/16)"),
    ({"ike": {"phase1Encryption": ["3DES"]}}, "platform:vpn.ike.phase1Encryption[0]"),
    ({"ike": {"phase1DhGroups": [14]}}, "platform:vpn.ike.phase1DhGroups[0]"),
    ({"ike": {"phase1Integrity": ["SHA2-256", "SHA2-256"]}}, "platform:vpn.ike.phase1Integrity"),
    ({"ike": {"phase2LifetimeSeconds": 3600, "phase1LifetimeSeconds": 3600}}, "platform:vpn.ike.phase2LifetimeSeconds = 3600: must be less than phase1LifetimeSeconds"),
    ({"ike": {"rekeyMarginSeconds": 1900}}, "platform:vpn.ike.rekeyMarginSeconds = 1900: must be at most half"),
    ({"ike": {"dpdTimeoutSeconds": 10}}, "platform:vpn.ike.dpdTimeoutSeconds = 10"),
    ({"dns": {"forwardDomains": ["corp.example.com"]}}, "platform:vpn.dns.onPremResolvers = []: must name the on-prem DNS servers"),
    ({"logRetentionDays": 42}, "platform:vpn.logRetentionDays = 42: CloudWatch Logs accepts only"),
])  # fmt: skip
def test_bad_vpn_config_names_the_key_and_the_rule(changes, expected):
    assert expected in _problems(_vpn(**changes))


def test_a_pre_shared_key_must_be_a_secret_and_follow_aws_rules():
    plaintext = _problems(_vpn(tunnels=[{**TUNNELS[0], "preSharedKey": "abcdefgh12"}, TUNNELS[1]]))
    assert "platform:vpn: holds a secret but is stored in plaintext" in plaintext and "abcdefgh12" not in plaintext
    bad = _problems(_vpn(tunnels=[{**TUNNELS[0], "preSharedKey": "0starts-with-zero"}, TUNNELS[1]]), {"platform:vpn"})
    assert "platform:vpn.tunnels[0].preSharedKey = [secret]: AWS takes 8-64 characters" in bad and "0starts" not in bad
    good = parse_config(_vpn(tunnels=[{**TUNNELS[0], "preSharedKey": "Abcdefgh_12.x"}, TUNNELS[1]]), {"platform:vpn"},
                        "stacks/Pulumi.dev.yaml")  # fmt: skip
    assert good.vpn.tunnels[0].pre_shared_key.get_secret_value() == "Abcdefgh_12.x"


def test_documentation_addresses_are_accepted_for_examples_but_shared_space_is_not():
    for address, ok in itertools.chain([("192.0.2.7", True), ("198.51.100.9", True), ("100.64.0.1", False),
                                        ("169.254.1.1", False), ("8.8.8.8", True)]):  # fmt: skip
        raw = _vpn(customerGateway={"ipAddress": address})
        if ok:
            assert parse_config(raw, set(), "s").vpn.customer_gateway.ip_address == ipaddress.IPv4Address(address)
        else:
            assert "must be the gateway's public" in _problems(raw)

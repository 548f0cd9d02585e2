"""The on-prem gateway's files, rendered from the stack config and the VPN's stack outputs (pure).

Route-based: each tunnel's CHILD_SA is bound to its own XFRM interface (``if_id``), so
traffic selectors are 0.0.0.0/0 as AWS proposes them and routing (FRR: BGP, or static
routes with distances) decides which tunnel carries what. When a tunnel's CHILD_SA
goes down, the updown hook takes its interface down, so routes over it are withdrawn
at once and traffic moves to the other tunnel.

Secrets are rendered into one file of their own (``*.secrets.conf``, mode 0600) and
only when the outputs carry them; ``platformctl vpn onprem-config`` never writes them
inside the repository.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.config import PlatformConfig, VpnConfig
from components.vpn.tunnels import (
    AWS_BGP_HOLD_SECONDS,
    AWS_BGP_KEEPALIVE_SECONDS,
    ON_PREM_RETRANSMISSION,
    InsideAddresses,
    Retransmission,
    esp_proposals,
    ike_proposals,
    ike_rekey_time,
    inside_addresses,
    rekey_jitter,
)

ETC_DIR = "platform-aws-vpn"  # under /etc: the interface script and the updown hook
CONNECTIONS_FILE = "swanctl/conf.d/aws-vpn.conf"
SECRETS_FILE = "swanctl/conf.d/aws-vpn.secrets.conf"
STRONGSWAN_FILE = "strongswan.d/aws-vpn.conf"
FRR_FILE = "frr/aws-vpn.frr.conf"
INTERFACES_FILE = f"{ETC_DIR}/interfaces.sh"
UPDOWN_FILE = f"{ETC_DIR}/updown.sh"
UNIT_FILE = "systemd/system/aws-vpn-interfaces.service"
SECRET_FILES = frozenset({SECRETS_FILE})
EXECUTABLES = frozenset({INTERFACES_FILE, UPDOWN_FILE})
# AWS's guidance for tunnel interfaces: MTU 1399, TCP MSS clamped to 1359 (headroom for any cipher).
TUNNEL_MTU = 1399
TUNNEL_MSS = 1359


class OutputsError(ValueError):
    """The stack outputs don't carry what the render needs (or disagree with the config)."""


@dataclass(frozen=True)
class Tunnel:
    number: int
    name: str  # connection, child and XFRM interface name
    if_id: int
    aws_outside: ipaddress.IPv4Address
    inside: InsideAddresses
    pre_shared_key: str | None  # None: render without secrets


@dataclass(frozen=True)
class Gateway:
    """Everything the on-prem files say, resolved: config plus the deployed VPN's addresses."""

    vpn: VpnConfig
    vpc_cidr: ipaddress.IPv4Network
    tunnels: tuple[Tunnel, Tunnel]

    @property
    def public_address(self) -> ipaddress.IPv4Address:
        return self.vpn.customer_gateway.ip_address

    @property
    def local_address(self) -> ipaddress.IPv4Address:
        return self.vpn.on_prem.local_address or self.vpn.customer_gateway.ip_address


def gateway(config: PlatformConfig, outputs: Mapping[str, Any], with_secrets: bool = True) -> Gateway:
    """Resolve the gateway from the stack config and ``pulumi stack output --json --show-secrets``.

    Raises :class:`OutputsError` naming the output that is missing or disagrees, e.g.
    when the config changed and ``pulumi up`` has not run since.
    """
    vpn = config.vpn
    if vpn is None:
        raise OutputsError("the stack has no platform:vpn")
    exported = outputs.get("vpn")
    if not isinstance(exported, Mapping) or not isinstance(exported.get("tunnels"), list):
        raise OutputsError("output vpn.tunnels is missing: has `pulumi up` run with platform:vpn set?")
    if len(exported["tunnels"]) != 2:
        raise OutputsError(f"output vpn.tunnels has {len(exported['tunnels'])} entries, not 2")
    keys: list[Any] = [None, None]
    if with_secrets:
        keys = outputs.get("vpnPreSharedKeys")  # type: ignore[assignment]
        if keys == "[secret]" or (isinstance(keys, str) and keys.startswith("[secret")):
            raise OutputsError("output vpnPreSharedKeys is masked: read the outputs with --show-secrets")
        if not isinstance(keys, list) or len(keys) != 2 or not all(isinstance(k, str) and k for k in keys):
            raise OutputsError("output vpnPreSharedKeys is missing or not two keys")
    tunnels = []
    for index, (tunnel_config, exported_tunnel) in enumerate(zip(vpn.tunnels, exported["tunnels"])):
        where = f"output vpn.tunnels[{index}]"
        if not isinstance(exported_tunnel, Mapping):
            raise OutputsError(f"{where} is not an object")
        if exported_tunnel.get("insideCidr") != str(tunnel_config.inside_cidr):
            raise OutputsError(
                f"{where}.insideCidr is {exported_tunnel.get('insideCidr')!r} but platform:vpn.tunnels[{index}].insideCidr "
                f"is {tunnel_config.inside_cidr}: run `pulumi up` first, then render"
            )
        try:
            outside = ipaddress.IPv4Address(exported_tunnel.get("outsideAddress"))
        except ValueError:
            raise OutputsError(f"{where}.outsideAddress is not an IPv4 address: {exported_tunnel.get('outsideAddress')!r}") from None
        number = index + 1
        tunnels.append(Tunnel(number=number, name=vpn.on_prem.interface_names[index], if_id=vpn.on_prem.if_id_base + index,
                              aws_outside=outside, inside=inside_addresses(tunnel_config.inside_cidr),
                              pre_shared_key=keys[index]))  # fmt: skip
    return Gateway(vpn=vpn, vpc_cidr=config.network.vpc_cidr, tunnels=(tunnels[0], tunnels[1]))


# --------------------------------------------------------------------------- strongSwan


def swanctl_connections(gw: Gateway, *, route_based: bool = True) -> str:
    """``swanctl.conf`` connections for both tunnels (no secrets).

    ``route_based=False`` leaves out the XFRM interface ids: only for test charons that
    run strongSwan's userspace IPsec (no XFRM in their kernel); production keeps them.
    """
    ike = gw.vpn.ike
    ike_props = ", ".join(ike_proposals(ike.phase1_encryption, ike.phase1_integrity, ike.phase1_dh_groups))
    esp_props = ", ".join(esp_proposals(ike.phase2_encryption, ike.phase2_integrity, ike.phase2_dh_groups))
    jitter = rekey_jitter(ike.rekey_margin_seconds, ike.rekey_fuzz_percentage)
    lines = ["# Rendered by `platformctl vpn onprem-config`: the AWS Site-to-Site VPN's two tunnels.",
             "# Secrets are in aws-vpn.secrets.conf. Load with: swanctl --load-all", "connections {"]  # fmt: skip
    for tunnel in gw.tunnels:
        child = [
            "            local_ts = 0.0.0.0/0",
            "            remote_ts = 0.0.0.0/0",
            f"            esp_proposals = {esp_props}",
            f"            rekey_time = {ike_rekey_time(ike.phase2_lifetime_seconds, ike.rekey_margin_seconds)}s",
            f"            rand_time = {jitter}s",
            f"            replay_window = {ike.replay_window_size}",
            "            dpd_action = restart",
            "            start_action = start",
            "            close_action = start",
            f"            updown = /etc/{UPDOWN_FILE}",
        ]  # fmt: skip
        if route_based:
            child += [f"            if_id_in = {tunnel.if_id}", f"            if_id_out = {tunnel.if_id}"]
        lines += [
            f"    {tunnel.name} {{",
            f"        # Tunnel {tunnel.number}: AWS endpoint {tunnel.aws_outside}, inside {tunnel.inside.customer} "
            f"<-> {tunnel.inside.aws.ip}",
            "        version = 2",
            f"        local_addrs = {gw.local_address}",
            f"        remote_addrs = {tunnel.aws_outside}",
            f"        proposals = {ike_props}",
            f"        rekey_time = {ike_rekey_time(ike.phase1_lifetime_seconds, ike.rekey_margin_seconds)}s",
            f"        rand_time = {jitter}s",
            f"        dpd_delay = {gw.vpn.on_prem.dpd_delay_seconds}s",
            "        encap = no",
            "        mobike = no",
            "        local {",
            "            auth = psk",
            f"            id = {gw.public_address}",
            "        }",
            "        remote {",
            "            auth = psk",
            f"            id = {tunnel.aws_outside}",
            "        }",
            "        children {",
            f"            {tunnel.name} {{",
            *["    " + line for line in child],
            "            }",
            "        }",
            "    }",
        ]  # fmt: skip
    lines.append("}")
    return "\n".join(lines) + "\n"


def swanctl_secrets(gw: Gateway) -> str:
    """The pre-shared keys, each bound to both IKE identities (so each tunnel gets its own key)."""
    lines = ["# Rendered by `platformctl vpn onprem-config`. Keep mode 0600; never commit.", "secrets {"]
    for tunnel in gw.tunnels:
        if tunnel.pre_shared_key is None:
            raise OutputsError("the pre-shared keys were not read (render with the secret outputs)")
        lines += [f"    ike-{tunnel.name} {{", f"        id-local = {gw.public_address}",
                  f"        id-remote = {tunnel.aws_outside}", f"        secret = {json.dumps(tunnel.pre_shared_key)}",
                  "    }"]  # fmt: skip
    lines.append("}")
    return "\n".join(lines) + "\n"


def strongswan_settings(retransmission: Retransmission = ON_PREM_RETRANSMISSION) -> str:
    """charon settings the tunnels rely on: FRR owns the routes; a dead AWS endpoint is noticed in seconds."""
    return (
        "# Rendered by `platformctl vpn onprem-config`.\n"
        "charon {\n"
        "    # Route-based tunnels: routes come from FRR over the XFRM interfaces, not from charon.\n"
        "    install_routes = no\n"
        "    # An unanswered liveness check gives up after "
        f"{retransmission.give_up_seconds():.1f} s (charon's default: 165 s).\n"
        f"    retransmit_timeout = {retransmission.timeout}\n"
        f"    retransmit_base = {retransmission.base}\n"
        f"    retransmit_tries = {retransmission.tries}\n"
        "}\n"
    )


# --------------------------------------------------------------------------- routing


def frr_config(gw: Gateway) -> str:
    """FRR: BGP to both AWS inside addresses (bgp), or the VPC's CIDR over both interfaces (static).

    Only the private cloud's own networks are announced, and only the VPC's accepted,
    so a mistake on either side cannot pull foreign traffic into the tunnels.
    """
    vpn = gw.vpn
    lines = ["! Rendered by `platformctl vpn onprem-config`: apply with `vtysh -f`, then `write memory`."]
    if vpn.routing == "static":
        # Tunnel 1 preferred; staticd drops a route whose interface is down (the updown hook).
        for distance, tunnel in zip((10, 20), gw.tunnels):
            lines.append(f"ip route {gw.vpc_cidr} {tunnel.name} {distance}")
        return "\n".join(lines) + "\n"
    router_id = vpn.on_prem.bgp_router_id or vpn.customer_gateway.ip_address
    lines += [f"ip prefix-list AWS-VPN-IN seq 10 permit {gw.vpc_cidr}"]
    lines += [f"ip prefix-list AWS-VPN-OUT seq {10 * (i + 1)} permit {cidr}" for i, cidr in enumerate(vpn.on_prem_cidrs)]
    lines += ["route-map AWS-VPN-IN permit 10", " match ip address prefix-list AWS-VPN-IN",
              "route-map AWS-VPN-OUT permit 10", " match ip address prefix-list AWS-VPN-OUT", "!",
              f"router bgp {vpn.customer_gateway.bgp_asn}", f" bgp router-id {router_id}"]  # fmt: skip
    for tunnel in gw.tunnels:
        peer = tunnel.inside.aws.ip
        lines += [f" neighbor {peer} remote-as {vpn.amazon_side_asn}",
                  f" neighbor {peer} description aws-tunnel{tunnel.number}",
                  f" neighbor {peer} timers {AWS_BGP_KEEPALIVE_SECONDS} {AWS_BGP_HOLD_SECONDS}",
                  f" neighbor {peer} update-source {tunnel.inside.customer.ip}"]  # fmt: skip
    lines.append(" address-family ipv4 unicast")
    lines += [f"  network {cidr}" for cidr in vpn.on_prem_cidrs]
    for tunnel in gw.tunnels:
        peer = tunnel.inside.aws.ip
        lines += [f"  neighbor {peer} route-map AWS-VPN-IN in", f"  neighbor {peer} route-map AWS-VPN-OUT out"]
    lines += [" exit-address-family", "!"]
    return "\n".join(lines) + "\n"


def interfaces_script(gw: Gateway) -> str:
    """Creates (``up``) or removes (``down``) the two XFRM interfaces, with MTU and MSS clamping."""
    outside = shlex.quote(gw.vpn.on_prem.outside_interface)
    up = []
    down = []
    for tunnel in gw.tunnels:
        name = shlex.quote(tunnel.name)
        up += [f"    ip link add {name} type xfrm dev {outside} if_id {tunnel.if_id} 2>/dev/null || true",
               f"    ip address replace {tunnel.inside.customer} dev {name}",
               f"    ip link set {name} mtu {TUNNEL_MTU} up",
               f"    sysctl -qw net.ipv4.conf.{tunnel.name}.rp_filter=2"]  # fmt: skip
        clamp = f"FORWARD -o {name} -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss {TUNNEL_MSS}"
        up.append(f"    iptables -C {clamp} 2>/dev/null || iptables -A {clamp}")
        down += [f"    iptables -D {clamp} 2>/dev/null || true", f"    ip link del {name} 2>/dev/null || true"]
    return "\n".join([
        "#!/bin/sh",
        "# Rendered by `platformctl vpn onprem-config`: the AWS tunnels' XFRM interfaces.",
        "set -eu",
        'case "${1:-up}" in',
        "up)",
        "    sysctl -qw net.ipv4.ip_forward=1",
        *up,
        "    ;;",
        "down)",
        *down,
        "    ;;",
        "*)",
        '    echo "usage: $0 up|down" >&2',
        "    exit 2",
        "    ;;",
        "esac",
    ]) + "\n"  # fmt: skip


def updown_script(gw: Gateway) -> str:
    """charon's updown hook: a tunnel's interface is up exactly while its CHILD_SA is.

    Routes over a down interface are withdrawn (BGP session dropped, static route
    removed), so traffic leaves a dead tunnel as soon as dead-peer detection says so.
    """
    cases = "\n".join(f"{tunnel.name}) interface={shlex.quote(tunnel.name)} ;;" for tunnel in gw.tunnels)
    return "\n".join([
        "#!/bin/sh",
        "# Rendered by `platformctl vpn onprem-config`: charon runs this on CHILD_SA up/down.",
        "set -eu",
        'case "${PLUTO_CONNECTION:-}" in',
        cases,
        '*) exit 0 ;;',
        "esac",
        'case "${PLUTO_VERB:-}" in',
        'up-client) ip link set "$interface" up ;;',
        'down-client) ip link set "$interface" down ;;',
        "esac",
    ]) + "\n"  # fmt: skip


def interfaces_unit() -> str:
    return "\n".join([
        "# Rendered by `platformctl vpn onprem-config`: XFRM interfaces before charon starts.",
        "[Unit]",
        "Description=XFRM interfaces of the AWS Site-to-Site VPN tunnels",
        "After=network-online.target",
        "Wants=network-online.target",
        "Before=strongswan.service frr.service",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart=/etc/{INTERFACES_FILE} up",
        f"ExecStop=/etc/{INTERFACES_FILE} down",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]) + "\n"  # fmt: skip


def onprem_files(gw: Gateway, with_secrets: bool = True) -> dict[str, str]:
    """Path under /etc → content, for the on-prem gateway."""
    files = {
        CONNECTIONS_FILE: swanctl_connections(gw),
        STRONGSWAN_FILE: strongswan_settings(),
        FRR_FILE: frr_config(gw),
        INTERFACES_FILE: interfaces_script(gw),
        UPDOWN_FILE: updown_script(gw),
        UNIT_FILE: interfaces_unit(),
    }
    if with_secrets:
        files[SECRETS_FILE] = swanctl_secrets(gw)
    return files

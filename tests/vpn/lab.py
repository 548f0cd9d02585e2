"""A site-to-site VPN in network namespaces: our rendered gateway against an emulated AWS side.

    lan ── onprem ══(wan: tunnel 1 and tunnel 2)══ aws ── vpc
         (our rendered config)           (AWS's side, derived from the same tunnel options)

Both gateways run Debian's charon. This kernel has no XFRM/ESP, so both use strongSwan's
userspace IPsec (kernel-libipsec, one TUN device ``ipsec0``); that is the only change made
to the rendered config (:func:`libipsec_variant`): XFRM interface ids become request ids,
so each tunnel keeps its own SAs. Routes to the far side point at ``ipsec0`` as FRR's would
at the XFRM interfaces. Two veth pairs in the on-prem namespace carry the XFRM interfaces'
names, so the rendered updown hook has real links to bring down and up.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import vici

from components.config import IkeConfig, PlatformConfig
from components.vpn import render
from components.vpn.tunnels import Retransmission, esp_proposals, ike_proposals

CHARON = "/usr/lib/ipsec/charon"
TOOLS = ("ip", "iptables", "swanctl", CHARON)
# Userspace IPsec, the algorithms AWS offers, and what swanctl and the updown hook need.
PLUGINS = ("random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 x509 pubkey vici kernel-libipsec "
           "kernel-netlink socket-default updown")  # fmt: skip
# AWS picks the endpoints' public addresses; the lab uses two of TEST-NET-1 (RFC 5737).
AWS_OUTSIDE = (ipaddress.IPv4Address("192.0.2.101"), ipaddress.IPv4Address("192.0.2.102"))
ECHO_PORT = 9000


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None and not os.access(tool, os.X_OK)]


def libipsec_variant(connections: str) -> str:
    """The rendered connections for a userspace-IPsec charon: ``if_id_in = N`` → ``reqid = N``, no ``if_id_out``."""
    text = re.sub(r"^(\s*)if_id_in = (\d+)$", r"\1reqid = \2", connections, flags=re.M)
    return re.sub(r"^\s*if_id_out = \d+\n", "", text, flags=re.M)


def aws_dead_peer_timing(dpd_timeout_seconds: int) -> tuple[int, Retransmission]:
    """AWS's side: liveness checks after a third of the DPD timeout, dead when the timeout has passed."""
    delay = dpd_timeout_seconds // 3
    return delay, Retransmission(timeout=(dpd_timeout_seconds - delay) / 5, base=1.0, tries=4)


def aws_side_connections(gw: render.Gateway, ike: IkeConfig, keys: tuple[str, str]) -> str:
    """AWS's two endpoints as charon sees them, from the tunnel options the VPN connection declares.

    ``ike`` is normally the stack's own; tests pass a different one to show that a
    mismatch stops the tunnel.
    """
    delay, _ = aws_dead_peer_timing(ike.dpd_timeout_seconds)
    ike_props = ", ".join(ike_proposals(ike.phase1_encryption, ike.phase1_integrity, ike.phase1_dh_groups))
    esp_props = ", ".join(esp_proposals(ike.phase2_encryption, ike.phase2_integrity, ike.phase2_dh_groups))
    lines = ["connections {"]
    for tunnel in gw.tunnels:
        lines += [
            f"  aws-tunnel{tunnel.number} {{", "    version = 2", f"    local_addrs = {tunnel.aws_outside}",
            f"    remote_addrs = {gw.public_address}", f"    proposals = {ike_props}", f"    dpd_delay = {delay}s",
            f"    rekey_time = {ike.phase1_lifetime_seconds}s", "    mobike = no",
            f"    local {{\n      auth = psk\n      id = {tunnel.aws_outside}\n    }}",
            f"    remote {{\n      auth = psk\n      id = {gw.public_address}\n    }}",
            "    children {", f"      aws-tunnel{tunnel.number} {{", "        local_ts = 0.0.0.0/0",
            "        remote_ts = 0.0.0.0/0", f"        esp_proposals = {esp_props}",
            f"        rekey_time = {ike.phase2_lifetime_seconds}s", f"        reqid = {tunnel.number}",
            f"        dpd_action = {'restart' if ike.dpd_timeout_action == 'restart' else 'clear'}",
            f"        start_action = {'start' if ike.startup_action == 'start' else 'none'}",
            "      }", "    }", "  }",
        ]  # fmt: skip
    lines.append("}")
    lines.append("secrets {")
    for tunnel, key in zip(gw.tunnels, keys):
        lines += [f"  ike-{tunnel.number} {{", f"    id-local = {tunnel.aws_outside}", f"    id-remote = {gw.public_address}",
                  f'    secret = "{key}"', "  }"]  # fmt: skip
    lines.append("}")
    return "\n".join(lines) + "\n"


def lab_outputs(config: PlatformConfig, keys: tuple[str, str]) -> dict:
    """What `pulumi stack output --json --show-secrets` would say, with the lab's AWS addresses."""
    assert config.vpn is not None
    return {"vpn": {"connectionId": "vpn-0lab", "tunnels": [
                {"outsideAddress": str(outside), "insideCidr": str(tunnel.inside_cidr)}
                for outside, tunnel in zip(AWS_OUTSIDE, config.vpn.tunnels)]},
            "vpnPreSharedKeys": list(keys)}  # fmt: skip


def random_keys() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(16)


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=check, capture_output=True, text=True)


@dataclass
class Side:
    name: str
    netns: str
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "charon.vici"

    def session(self) -> vici.Session:
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(self.socket))
        return vici.Session(sock)

    def log(self) -> str:
        path = self.directory / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class VpnLab:
    config: PlatformConfig
    workdir: Path
    keys: tuple[str, str] = field(default_factory=random_keys)
    prefix: str = field(default_factory=lambda: f"v{os.getpid() % 100000}")

    def __post_init__(self) -> None:
        assert self.config.vpn is not None
        self.gateway = render.gateway(self.config, lab_outputs(self.config, self.keys))
        self.onprem = Side("onprem", f"{self.prefix}-onprem", self.workdir / "onprem")
        self.aws = Side("aws", f"{self.prefix}-aws", self.workdir / "aws")
        self.lan_ns, self.vpc_ns = f"{self.prefix}-lan", f"{self.prefix}-vpc"
        lan_net = self.config.vpn.on_prem_cidrs[0]
        self.lan_gateway, self.lan_host = list(lan_net.hosts())[0], list(lan_net.hosts())[9]
        vpc_net = ipaddress.IPv4Network((self.config.network.vpc_cidr.network_address, 24))
        self.vpc_gateway, self.vpc_host = list(vpc_net.hosts())[0], list(vpc_net.hosts())[9]
        self._echo: subprocess.Popen | None = None

    # -- topology -------------------------------------------------------------------------

    def _ns(self, ns: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", ns, *command, check=check)

    def build(self) -> None:
        p = self.prefix
        for ns in (self.lan_ns, self.onprem.netns, self.aws.netns, self.vpc_ns):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        pairs = [(f"{p}l0", self.lan_ns, f"{p}l1", self.onprem.netns), (f"{p}w0", self.onprem.netns, f"{p}w1", self.aws.netns),
                 (f"{p}v0", self.aws.netns, f"{p}v1", self.vpc_ns)]  # fmt: skip
        for a, ns_a, b, ns_b in pairs:
            _run("ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b)
        addresses = [(self.lan_ns, f"{p}l0", f"{self.lan_host}/24"), (self.onprem.netns, f"{p}l1", f"{self.lan_gateway}/24"),
                     (self.onprem.netns, f"{p}w0", f"{self.gateway.local_address}/32"),
                     (self.aws.netns, f"{p}w1", f"{AWS_OUTSIDE[0]}/32"), (self.aws.netns, f"{p}w1", f"{AWS_OUTSIDE[1]}/32"),
                     (self.aws.netns, f"{p}v0", f"{self.vpc_gateway}/24"), (self.vpc_ns, f"{p}v1", f"{self.vpc_host}/24")]  # fmt: skip
        for ns, dev, address in addresses:
            _run("ip", "-n", ns, "addr", "add", address, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        # The "internet" between the gateways: each side's public addresses on one link.
        for address in AWS_OUTSIDE:
            _run("ip", "-n", self.onprem.netns, "route", "add", f"{address}/32", "dev", f"{p}w0")
        _run("ip", "-n", self.aws.netns, "route", "add", f"{self.gateway.local_address}/32", "dev", f"{p}w1")
        _run("ip", "-n", self.lan_ns, "route", "add", "default", "via", str(self.lan_gateway))
        _run("ip", "-n", self.vpc_ns, "route", "add", "default", "via", str(self.vpc_gateway))
        for ns in (self.onprem.netns, self.aws.netns):
            self._ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Links named as the XFRM interfaces, for the rendered updown hook to bring down and up.
        for tunnel in self.gateway.tunnels:
            _run("ip", "-n", self.onprem.netns, "link", "add", tunnel.name, "type", "veth", "peer", "name", f"{tunnel.name}p")
            _run("ip", "-n", self.onprem.netns, "link", "set", tunnel.name, "up")

    def teardown(self) -> None:
        for side in (self.onprem, self.aws):
            self.stop(side)
        if self._echo is not None:
            self._echo.kill()
            self._echo.wait()
        for ns in (self.lan_ns, self.onprem.netns, self.aws.netns, self.vpc_ns):
            _run("ip", "netns", "del", ns, check=False)

    # -- charons --------------------------------------------------------------------------

    def _settings(self, side: Side, include: Path | None, retransmission: Retransmission | None) -> Path:
        lines = [f"include {include}"] if include else []
        # kernel-libipsec installs its own routes into ipsec0 whatever install_routes says; its
        # table is looked up after main here, so the lab's routes (FRR's, in production) win.
        lines += ["charon {", "    load_modular = no", f"    load = {PLUGINS}", "    install_routes = no",
                  "    routing_table = 220", "    routing_table_prio = 40000",
                  f"    plugins {{\n        vici {{\n            socket = unix://{side.socket}\n        }}\n    }}",
                  f"    filelog {{\n        lab {{\n            path = {side.directory}/charon.log\n"
                  "            time_format = %T\n            flush_line = yes\n            default = 1\n            ike = 2\n        }\n    }"]  # fmt: skip
        if retransmission is not None:
            lines += [f"    retransmit_timeout = {retransmission.timeout}", f"    retransmit_base = {retransmission.base}",
                      f"    retransmit_tries = {retransmission.tries}"]  # fmt: skip
        lines.append("}")
        path = side.directory / "strongswan.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, aws_ike: IkeConfig | None = None, aws_keys: tuple[str, str] | None = None,
              rendered_timing: bool = True) -> None:
        """Write both sides' files, start both charons, load their configs (tunnels start by themselves).

        ``aws_ike`` / ``aws_keys`` give the AWS side other tunnel options or keys than the stack's;
        ``rendered_timing=False`` leaves out the rendered charon settings (the benchmark's peer:
        charon's default retransmission schedule).
        """
        for side in (self.onprem, self.aws):
            side.directory.mkdir(parents=True, exist_ok=True)
        files = render.onprem_files(self.gateway)
        etc = self.onprem.directory / "etc"
        for relative, content in files.items():
            (etc / relative).parent.mkdir(parents=True, exist_ok=True)
            (etc / relative).write_text(content)
            if relative in render.EXECUTABLES:
                (etc / relative).chmod(0o755)
        connections = libipsec_variant(files[render.CONNECTIONS_FILE]).replace("/etc/", f"{etc}/")
        (self.onprem.directory / "swanctl.conf").write_text(connections + files[render.SECRETS_FILE])
        onprem_settings = self._settings(self.onprem, etc / render.STRONGSWAN_FILE if rendered_timing else None, None)

        ike = aws_ike or self.config.vpn.ike
        (self.aws.directory / "swanctl.conf").write_text(aws_side_connections(self.gateway, ike, aws_keys or self.keys))
        aws_settings = self._settings(self.aws, None, aws_dead_peer_timing(ike.dpd_timeout_seconds)[1])

        self._charon(self.aws, aws_settings)
        self._charon(self.onprem, onprem_settings)
        # Routes to the far side through the tunnels (FRR's job over XFRM interfaces in production).
        _run("ip", "-n", self.aws.netns, "route", "add", str(self.config.vpn.on_prem_cidrs[0]), "dev", "ipsec0")
        _run("ip", "-n", self.onprem.netns, "route", "add", str(self.config.network.vpc_cidr), "dev", "ipsec0")
        for side in (self.aws, self.onprem):
            result = _run("swanctl", "--load-all", "--file", str(side.directory / "swanctl.conf"),
                          "--uri", f"unix://{side.socket}", check=False)  # fmt: skip
            if result.returncode != 0 or "successfully loaded 2 connections" not in result.stdout:
                raise RuntimeError(f"swanctl --load-all on {side.name}: {result.stdout}{result.stderr}")

    def _charon(self, side: Side, settings: Path) -> None:
        # Each charon in its network namespace with a private /run (its pid file is fixed
        # at /run/charon.pid); its vici socket lives in the lab directory instead.
        side.process = subprocess.Popen(
            ["ip", "netns", "exec", side.netns, "unshare", "--mount", "sh", "-c",
             f"mount -t tmpfs lab-run /run && exec {CHARON}"],
            env={**os.environ, "STRONGSWAN_CONF": str(settings)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: side.socket.exists() and self._has_tun(side), 10, f"charon ({side.name}) did not start")

    def _has_tun(self, side: Side) -> bool:
        return _run("ip", "-n", side.netns, "link", "show", "ipsec0", check=False).returncode == 0

    def stop(self, side: Side) -> None:
        if side.process is not None and side.process.poll() is None:
            os.killpg(side.process.pid, signal.SIGTERM)
            try:
                side.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(side.process.pid, signal.SIGKILL)
                side.process.wait()

    # -- state ----------------------------------------------------------------------------

    def sas(self, side: Side) -> dict[str, dict]:
        """IKE SAs by connection name, as charon reports them (state, proposals, children, counters)."""
        result = {}
        for entry in side.session().list_sas():
            for name, sa in entry.items():
                result[name] = _decode(sa)
        return result

    def established(self, side: Side) -> set[int]:
        """Tunnel numbers with an ESTABLISHED IKE SA and an INSTALLED CHILD SA."""
        up = set()
        for index, tunnel in enumerate(self.gateway.tunnels, start=1):
            name = tunnel.name if side is self.onprem else f"aws-tunnel{index}"
            sa = self.sas(side).get(name)
            if sa and sa["state"] == "ESTABLISHED" and any(c["state"] == "INSTALLED" for c in sa.get("child-sas", {}).values()):
                up.add(index)
        return up

    def packets_out(self, tunnel: int) -> int:
        """ESP packets the on-prem gateway sent into ``tunnel`` (its current CHILD SAs)."""
        sa = self.sas(self.onprem).get(self.gateway.tunnels[tunnel - 1].name, {})
        return sum(int(child.get("packets-out", 0)) for child in sa.get("child-sas", {}).values())

    def make_active(self, tunnel: int) -> None:
        """Re-create ``tunnel``'s CHILD SA: the userspace stack sends through the newest of
        identical policies, so from now on this tunnel carries the traffic both ways."""
        name = self.gateway.tunnels[tunnel - 1].name
        session = self.onprem.session()
        for _ in session.terminate({"child": name, "timeout": 5000}):
            pass
        for _ in session.initiate({"child": name, "timeout": 5000}):
            pass

    def link_up(self, name: str) -> bool:
        out = _run("ip", "-n", self.onprem.netns, "-o", "link", "show", name).stdout
        return "state UP" in out or ",UP" in out.split(">")[0]

    def cut(self, tunnel: int) -> None:
        """Drop everything between the on-prem gateway and AWS's endpoint of ``tunnel``, both ways."""
        address = str(AWS_OUTSIDE[tunnel - 1])
        for chain, match in (("INPUT", "-s"), ("OUTPUT", "-d")):
            self._ns(self.onprem.netns, "iptables", "-I", chain, match, address, "-j", "DROP")

    # -- traffic --------------------------------------------------------------------------

    def start_echo(self) -> None:
        code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"s.bind(('0.0.0.0',{ECHO_PORT}))\nwhile True:\n    d,a=s.recvfrom(2048)\n    s.sendto(d,a)\n")  # fmt: skip
        self._echo = subprocess.Popen(["ip", "netns", "exec", self.vpc_ns, "python3", "-c", code])
        time.sleep(0.3)

    def echo(self, count: int = 3, timeout: float = 0.5) -> int:
        """UDP datagrams from the on-prem LAN host that came back from the VPC host."""
        code = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"s.settimeout({timeout})\nok=0\nfor i in range({count}):\n"
                f"    s.sendto(b'ping %d' % i, ('{self.vpc_host}', {ECHO_PORT}))\n"
                "    try:\n        ok += s.recvfrom(2048)[0] == b'ping %d' % i\n    except OSError:\n        pass\n"
                "print(ok)\n")  # fmt: skip
        return int(self._ns(self.lan_ns, "python3", "-c", code).stdout.strip() or 0)


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {(k.decode() if isinstance(k, bytes) else k): _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def wait_for(condition: Callable[[], bool], timeout: float, message: str, interval: float = 0.2) -> float:
    """Poll ``condition`` until true; return the seconds it took, or raise with ``message``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"{message} (after {timeout:g} s)")

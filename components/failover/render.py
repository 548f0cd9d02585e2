"""Pure rendering of the failover pair: addresses, keepalived.conf, Redis and agent settings, cloud-init.

The same functions feed the Pulumi component (AWS), ``platformctl failover render``
(on premises) and the network-namespace tests, so what is tested is what ships.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from components.config import FailoverConfig, NetworkConfig, RedisConfig, VrrpConfig
from components.failover.policies import METRIC_NAMESPACE
from components.network.cidr import allocate_subnets

NodeName = Literal["a", "b"]
NODES: tuple[NodeName, NodeName] = ("a", "b")
RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
AGENT_SOURCE = RUNTIME_DIR / "failover_agent.py"
AGENT_REQUIREMENTS = RUNTIME_DIR / "requirements.txt"



@dataclass(frozen=True)
class NodePaths:
    """Where things live on a node (the same on AWS and on premises; tests use their own)."""

    install_dir: str = "/opt/platform-failover"
    python: str = "/opt/platform-failover/venv/bin/python"
    settings: str = "/etc/platform-failover/agent.json"
    password_file: str = "/etc/platform-failover/redis.pass"
    redis_auth_file: str = "/etc/platform-failover/redis-auth.conf"
    redis_include: str = "/etc/platform-failover/redis.conf"
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    state_dir: str = "/run/platform-failover"
    vrrp_pid_file: str = "/run/keepalived_vrrp.pid"  # keepalived's default for its VRRP process
    redis_cli: str = "/usr/bin/redis-cli"
    event_log: str = "/var/log/platform-failover/events.jsonl"

    @property
    def agent(self) -> str:
        return f"{self.install_dir}/failover_agent.py"

    @property
    def health_check(self) -> str:
        return f"{self.install_dir}/check-redis"


PATHS = NodePaths()
AL2023_PATHS = dataclasses.replace(PATHS, redis_cli="/usr/bin/redis6-cli")
# AL2023 names: Nitro interfaces are ens5; Redis 6 ships as redis6.
AWS_INTERFACE = "ens5"
AL2023_REDIS = {"package": "redis6", "service": "redis6", "conf": "/etc/redis6/redis6.conf"}
# Priorities only break ties when both nodes come up together; nopreempt keeps the
# current master afterwards (no flapping back when the other node returns).
PRIORITY = {"a": 110, "b": 100}


@dataclass(frozen=True)
class PairLayout:
    """Where the pair's nodes and VIP are: addresses known before anything is created."""

    mode: Literal["secondaryIp", "elasticIp", "l2"]
    interface: str
    addresses: dict[str, ipaddress.IPv4Address]
    prefixlen: dict[str, int]
    azs: dict[str, str | None]
    vip: ipaddress.IPv4Interface | None  # None for elasticIp: the public address is AWS's NAT

    def peer(self, node: NodeName) -> ipaddress.IPv4Address:
        return self.addresses["b" if node == "a" else "a"]


def aws_layout(config: FailoverConfig, network: NetworkConfig) -> PairLayout:
    """Node a at the subnet's ``hostOffset``, node b the next address, the secondaryIp VIP after it."""
    tier = "public" if config.vip_mode == "elasticIp" else "private"
    subnets = {plan.az: plan.cidr for plan in allocate_subnets(
        network.vpc_cidr, network.availability_zones, network.subnet_prefix_lengths(), network.az_slots) if plan.tier == tier}  # fmt: skip
    az_a, az_b = config.node_azs(network.availability_zones)
    cidr = {"a": subnets[az_a], "b": subnets[az_b]}
    addresses = {"a": cidr["a"][config.host_offset], "b": cidr["b"][config.host_offset + 1]}
    vip = None
    if config.vip_mode == "secondaryIp":
        vip = ipaddress.IPv4Interface(f"{cidr['a'][config.host_offset + 2]}/{cidr['a'].prefixlen}")
    return PairLayout(config.vip_mode, AWS_INTERFACE, addresses, {n: cidr[n].prefixlen for n in NODES},
                      {"a": az_a, "b": az_b}, vip)  # fmt: skip


def on_prem_layout(config: FailoverConfig) -> PairLayout:
    if config.on_prem is None:
        raise ValueError("platform:failover.onPrem is not set: there is no on-premises pair to render")
    site = config.on_prem
    return PairLayout("l2", site.interface, dict(zip(NODES, site.node_addresses)),
                      {n: site.vip.network.prefixlen for n in NODES}, {n: None for n in NODES}, site.vip)  # fmt: skip


def _quote(*words: str) -> str:
    return '"' + " ".join(words) + '"'


def keepalived_conf(layout: PairLayout, node: NodeName, vrrp: VrrpConfig, pair: str, paths: NodePaths = PATHS) -> str:
    """keepalived.conf for one node: unicast VRRP, both BACKUP + nopreempt, Redis health check."""
    # The agent runs by its own shebang (the venv's python): keepalived resolves the
    # interpreter's symlink, which would lose the venv if python were named here.
    agent = (paths.agent, "--settings", paths.settings)
    vip_block = ""
    if layout.vip is not None:
        # secondaryIp and l2: the address is also configured locally so this host answers for it.
        vip_block = f"""
    virtual_ipaddress {{
        {layout.vip.with_prefixlen} dev {layout.interface}
    }}"""
    return f"""# Rendered by components/failover (pair {pair}, node {node}); do not edit on the host.
global_defs {{
    router_id {pair}-{node}
    enable_script_security
    script_user {vrrp.script_user}
    vrrp_version {vrrp.version}
    # Gratuitous ARP at takeover, a second burst 1 s later and a refresh every minute. The
    # second burst matters: Linux ignores an ARP update within locktime (1 s) of the last
    # one, so a client still talking to the old node can miss the first burst (measured:
    # 3-5 s longer failovers without it; docs/failover.md).
    vrrp_garp_master_delay 1
    vrrp_garp_master_refresh 60
    max_auto_priority
    # State changes go, in order, through a FIFO to one long-running agent process: no
    # Python start-up per transition, and a late BACKUP can never overwrite a newer MASTER
    # (separate notify_* processes can finish out of order). keepalived starts the reader.
    vrrp_notify_fifo {paths.state_dir}/notify.fifo {vrrp.script_user}
    vrrp_notify_fifo_script {_quote(*agent, "notify-fifo")}
}}

vrrp_script redis_healthy {{
    script {_quote(paths.health_check)}
    interval {vrrp.health_interval_seconds}
    timeout {vrrp.health_interval_seconds}
    fall {vrrp.health_fall}
    rise {vrrp.health_rise}
}}

vrrp_instance {pair} {{
    state BACKUP
    nopreempt
    interface {layout.interface}
    virtual_router_id {vrrp.virtual_router_id}
    priority {PRIORITY[node]}
    advert_int {vrrp.advert_interval:g}
    unicast_src_ip {layout.addresses[node]}
    unicast_peer {{
        {layout.peer(node)}
    }}
    unicast_fault_no_peer
    check_unicast_src{vip_block}
    track_script {{
        redis_healthy
    }}
}}
"""


def redis_conf(layout: PairLayout, node: NodeName, redis: RedisConfig, data_dir: str | None = None,
               paths: NodePaths = PATHS) -> str:  # fmt: skip
    """The settings the pair relies on, included from the distribution's redis.conf."""
    lines = [
        f"# Rendered by components/failover (node {node}).",
        "bind 0.0.0.0",
        "protected-mode no",  # requirepass is set (redis-auth.conf) and the security group limits clients
        f"port {redis.port}",
        "appendonly yes",
        f"appendfsync {redis.appendfsync}",
        "aof-use-rdb-preamble yes",
        # A replica never takes writes: only the VIP's node (the primary) does.
        "replica-read-only yes",
        "replica-serve-stale-data yes",
        # Session data must not be evicted silently: writes fail loudly when full.
        "maxmemory-policy noeviction",
        "repl-diskless-sync yes",
        # One replica: nothing to batch, so don't wait the default 5 s before a full sync.
        # The sooner the returning node is in sync, the shorter the window without a replica.
        "repl-diskless-sync-delay 0",
        "repl-timeout 10",
    ]
    if data_dir is not None:  # None: the distribution's data directory
        lines.append(f"dir {data_dir}")
    if redis.max_memory_mb is not None:
        lines.append(f"maxmemory {redis.max_memory_mb}mb")
    lines.append(f"include {paths.redis_auth_file}")
    return "\n".join(lines) + "\n"


def agent_settings(layout: PairLayout, node: NodeName, config: FailoverConfig, pair: str, *, region: str | None = None,
                   network_interface_id: str | None = None, allocation_id: str | None = None,
                   metrics: bool = True, audit_stream: str | None = None, paths: NodePaths = PATHS) -> dict[str, Any]:  # fmt: skip
    """agent.json: what the node agent needs; AWS ids come from the component's outputs.

    ``audit_stream``: the Firehose stream its ``failover.transition`` audit events go to
    (AWS pairs; an l2 pair on premises has no AWS credentials and keeps them in its event log).
    """
    vip: dict[str, Any] = {"mode": layout.mode}
    if layout.mode == "secondaryIp":
        vip |= {"address": str(layout.vip.ip), "networkInterfaceId": network_interface_id}
    elif layout.mode == "elasticIp":
        vip |= {"allocationId": allocation_id, "networkInterfaceId": network_interface_id}
    return {
        "pair": pair, "node": node, "peerAddress": str(layout.peer(node)), "redisPort": config.redis.port,
        "redisPasswordFile": paths.password_file, "vip": vip, "stateDir": paths.state_dir, "eventLog": paths.event_log,
        "region": region, "metrics": metrics and layout.mode != "l2",
        "reconcileIntervalSeconds": config.reconcile_interval_seconds, "vrrpPidFile": paths.vrrp_pid_file,
        "metricNamespace": METRIC_NAMESPACE, "auditStream": audit_stream if layout.mode != "l2" else None,
    }  # fmt: skip


def health_check_script(port: int, paths: NodePaths = PATHS) -> str:
    """keepalived's check: a shell and redis-cli, so a check costs milliseconds, not a Python start.

    The reply must be PONG: redis-cli exits 0 on error replies such as LOADING. A hung
    Redis is cut off by keepalived's script timeout. No secret is needed: Redis's
    default user may PING and nothing else (see the agent's redis_auth_conf).
    """
    return f"""#!/bin/sh
# Rendered by components/failover: keepalived's Redis health check.
[ "$({paths.redis_cli} -p {port} PING 2>/dev/null)" = "PONG" ]
"""


def agent_script(paths: NodePaths = PATHS) -> str:
    """The agent with a shebang naming the node's venv interpreter."""
    return f"#!{paths.python}\n" + AGENT_SOURCE.read_text()


def node_files(layout: PairLayout, node: NodeName, config: FailoverConfig, pair: str, settings: dict[str, Any],
               redis_data_dir: str | None = None, paths: NodePaths = PATHS) -> dict[str, str]:  # fmt: skip
    """Every file a node needs, by its path on the node: what cloud-init writes on AWS and
    what ``platformctl failover render`` prints for an on-premises host."""
    return {
        paths.keepalived_conf: keepalived_conf(layout, node, config.vrrp, pair, paths),
        paths.settings: json.dumps(settings, indent=2, sort_keys=True) + "\n",
        paths.redis_include: redis_conf(layout, node, config.redis, redis_data_dir, paths),
        paths.agent: agent_script(paths),
        paths.health_check: health_check_script(config.redis.port, paths),
        f"{paths.install_dir}/requirements.txt": AGENT_REQUIREMENTS.read_text(),
    }


def _unit(description: str, exec_start: str, user: str) -> str:
    return f"""[Unit]
Description={description}
After=network-online.target keepalived.service

[Service]
User={user}
RuntimeDirectory=platform-failover
RuntimeDirectoryPreserve=yes
ExecStart={exec_start}
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


_RESTART_ALWAYS = "[Service]\nRestart=always\nRestartSec=1\n"


def _keepalived_exec(paths: NodePaths) -> str:
    """VRRP only, with the VRRP process's pid file where the agent looks for it (not a default)."""
    return ("ExecStart=\n"
            f"ExecStart=/usr/sbin/keepalived --vrrp --log-detail --pid=/run/keepalived.pid "
            f"--vrrp_pid={paths.vrrp_pid_file}\n")  # fmt: skip


def cloud_init(layout: PairLayout, node: NodeName, config: FailoverConfig, pair: str, settings: dict[str, Any],
               password_parameter: str, region: str) -> str:  # fmt: skip
    """A cloud-config for an AL2023 node: packages, rendered files, the agent, services."""
    redis = AL2023_REDIS
    user = config.vrrp.script_user

    def file(path: str, content: str, mode: str = "0644", owner: str = "root:root") -> dict[str, Any]:
        packed = base64.b64encode(gzip.compress(content.encode(), mtime=0)).decode()
        return {"path": path, "permissions": mode, "owner": owner, "encoding": "gz+b64", "content": packed}

    paths = AL2023_PATHS
    modes = {paths.keepalived_conf: "0640", paths.agent: "0755", paths.health_check: "0755"}
    files = [file(path, content, modes.get(path, "0644"))
             for path, content in node_files(layout, node, config, pair, settings, paths=paths).items()]
    files += [
        file("/etc/systemd/system/platform-failover-agent.service",
             _unit("Failover pair reconciler and metrics", f"{paths.python} {paths.agent} --settings {paths.settings} run", user)),
        # Both daemons come back by themselves: a restarted keepalived starts as BACKUP
        # and the agent re-points its Redis at the new primary.
        file("/etc/systemd/system/keepalived.service.d/restart.conf", _RESTART_ALWAYS + _keepalived_exec(paths)),
        file(f"/etc/systemd/system/{redis['service']}.service.d/restart.conf", _RESTART_ALWAYS),
        file("/etc/tmpfiles.d/platform-failover.conf",
             f"d {paths.state_dir} 0750 {user} {user} -\nd {Path(paths.event_log).parent} 0750 {user} {user} -\n"),
    ]  # fmt: skip
    requirements = f"{paths.install_dir}/requirements.txt"
    commands = [
        ["useradd", "--system", "--no-create-home", "--shell", "/sbin/nologin", user],
        ["python3.11", "-m", "venv", str(Path(paths.python).parent.parent)],
        [str(Path(paths.python).parent / "pip"), "install", "--no-cache-dir", "--require-hashes", "-r", requirements],
        ["systemd-tmpfiles", "--create", "/etc/tmpfiles.d/platform-failover.conf"],
        ["sh", "-c", f"echo 'include {paths.redis_include}' >> {redis['conf']}"],
        ["sh", "-c", f"install -m 0640 -o root -g {user} /dev/null {paths.password_file} && "
                     # Redis reads its auth include as the group that owns its config.
                     f"install -m 0640 -o root -g \"$(stat -c %G {redis['conf']})\" /dev/null {paths.redis_auth_file}"],
        [paths.python, paths.agent, "--settings", paths.settings, "bootstrap", "--parameter", password_parameter,
         "--redis-auth-file", paths.redis_auth_file],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", redis["service"], "keepalived", "platform-failover-agent"],
    ]  # fmt: skip
    document = {
        "packages": ["keepalived", redis["package"], "python3.11", "python3.11-pip"],
        "package_update": True,
        "write_files": files,
        "runcmd": commands,
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False, width=200)


def compressed_user_data(cloud_config: str) -> str:
    """gzip + base64: cloud-init unpacks it, and EC2's 16 KiB user-data limit applies to this size."""
    return base64.b64encode(gzip.compress(cloud_config.encode(), mtime=0)).decode()

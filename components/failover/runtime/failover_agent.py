"""The failover pair's node agent: keepalived's notify hooks and the reconciler.

Shipped to each node by the FailoverPair component (cloud-init) or by
``platformctl failover render`` (on premises), next to a rendered ``agent.json``.

    failover_agent.py notify-fifo FIFO   keepalived's vrrp_notify_fifo_script: each state change, in order
    failover_agent.py notify STATE       record STATE and reconcile once (by hand, or a notify_* hook)
    failover_agent.py reconcile          one pass: Redis role and VIP placement follow STATE
    failover_agent.py run                reconcile every N seconds and publish metrics (systemd)
    failover_agent.py bootstrap          (root, at boot) fetch the Redis password from SSM

The state keepalived last reported is the source of truth. MASTER: promote Redis
(``REPLICAOF NO ONE``) and move the VIP here (AWS modes; keepalived adds the local
address itself). BACKUP or FAULT: replicate from the peer once the peer is the
primary. Every pass is idempotent, so the periodic run repairs whatever a missed or
overlapping notify left behind, such as the VIP's placement after a split brain heals.

Python 3.11+, boto3 and redis (components/failover/runtime/requirements.txt).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from datetime import UTC, datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SETTINGS = "/etc/platform-failover/agent.json"
STATES = ("MASTER", "BACKUP", "FAULT", "STOP")
REDIS_USER = "app"  # clients, replication and the agent; the default user may only PING (health checks)


class VipMoveError(RuntimeError):
    """The VIP did not reach this node in time."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    pair: str
    node: str
    peer_address: str
    redis_port: int
    password_file: str | None
    vip: dict[str, Any]
    state_file: Path
    lock_file: Path
    event_log: Path | None
    region: str | None
    metrics: bool
    reconcile_interval: float
    vrrp_pid_file: Path | None
    metric_namespace: str
    audit_stream: str | None = None  # Firehose stream of the platform's audit events

    @classmethod
    def load(cls, path: str) -> Settings:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"failover-agent: cannot read settings {path}: {exc}") from exc
        missing = [key for key in ("pair", "node", "peerAddress", "redisPort", "vip", "stateDir") if key not in raw]
        if missing:
            raise SystemExit(f"failover-agent: settings {path} lack {', '.join(missing)}")
        state_dir = Path(raw["stateDir"])
        return cls(
            pair=raw["pair"], node=raw["node"], peer_address=raw["peerAddress"], redis_port=int(raw["redisPort"]),
            password_file=raw.get("redisPasswordFile"), vip=raw["vip"], state_file=state_dir / "state",
            lock_file=state_dir / "lock", event_log=Path(raw["eventLog"]) if raw.get("eventLog") else None,
            region=raw.get("region"), metrics=bool(raw.get("metrics", False)),
            reconcile_interval=float(raw.get("reconcileIntervalSeconds", 10)),
            vrrp_pid_file=Path(raw["vrrpPidFile"]) if raw.get("vrrpPidFile") else None,
            metric_namespace=raw.get("metricNamespace", ""), audit_stream=raw.get("auditStream"),
        )  # fmt: skip


def log_event(settings: Settings, event: str, **fields: Any) -> None:
    """One JSON line per event, to stderr (journald) and the event log."""
    record = {"ts": round(time.time(), 3), "mono": round(time.monotonic(), 4), "pair": settings.pair,
              "node": settings.node, "event": event, **fields}  # fmt: skip
    line = json.dumps(record, sort_keys=True)
    print(line, file=sys.stderr, flush=True)
    if settings.event_log is not None:
        with settings.event_log.open("a") as handle:
            handle.write(line + "\n")


def read_state(settings: Settings) -> str:
    try:
        state = settings.state_file.read_text().strip()
    except FileNotFoundError:
        return "BACKUP"  # keepalived starts every node as BACKUP
    return state if state in STATES else "BACKUP"


def keepalived_alive(settings: Settings) -> bool:
    """Whether keepalived's VRRP process runs (its pid file names a live keepalived)."""
    if settings.vrrp_pid_file is None:
        return True
    try:
        pid = int(settings.vrrp_pid_file.read_text().split()[0])
        return Path(f"/proc/{pid}/comm").read_text().strip() == "keepalived"
    except (OSError, ValueError, IndexError):
        return False


def write_state(settings: Settings, state: str) -> None:
    tmp = settings.state_file.with_suffix(".tmp")
    tmp.write_text(state + "\n")
    tmp.replace(settings.state_file)


# --------------------------------------------------------------------------- redis


def _password(settings: Settings) -> str | None:
    if not settings.password_file:
        return None
    return Path(settings.password_file).read_text().strip() or None


def redis_client(settings: Settings, host: str, timeout: float = 0.5):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No client-side retries: redis-py's default backs off for seconds on a dead peer while
    # this process holds the reconcile lock, delaying a promotion (measured: 4 s). The
    # periodic pass is the retry.
    return redis.Redis(host=host, port=settings.redis_port, username=REDIS_USER, password=_password(settings),
                       socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))  # fmt: skip


def redis_role(settings: Settings, host: str, timeout: float = 0.5) -> tuple[str, str | None]:
    """('master', None) or ('slave', '<master host>'); raises when Redis doesn't answer."""
    role = redis_client(settings, host, timeout).role()
    kind = role[0].decode() if isinstance(role[0], bytes) else role[0]
    if kind == "slave":
        master = role[1].decode() if isinstance(role[1], bytes) else role[1]
        return kind, master
    return kind, None


def promote(settings: Settings) -> bool:
    kind, _ = redis_role(settings, "127.0.0.1")
    if kind == "master":
        return False
    redis_client(settings, "127.0.0.1").replicaof("NO", "ONE")
    log_event(settings, "redis_promoted")
    return True


def follow_peer(settings: Settings) -> bool:
    """Replicate from the peer, but only once the peer is the primary.

    Never replicate from a peer that is itself a replica: two nodes following each other
    would let an empty node's data replace the other's after a cold start of both.
    """
    try:
        peer_kind, _ = redis_role(settings, settings.peer_address, timeout=0.25)
    except Exception as exc:  # noqa: BLE001 - peer down or unreachable: nothing to follow yet
        log_event(settings, "peer_unreachable", error=type(exc).__name__)
        return False
    if peer_kind != "master":
        return False
    kind, master = redis_role(settings, "127.0.0.1")
    if kind == "slave" and master == settings.peer_address:
        return False
    redis_client(settings, "127.0.0.1").replicaof(settings.peer_address, settings.redis_port)
    log_event(settings, "redis_following", primary=settings.peer_address)
    return True


def redis_healthy(settings: Settings) -> bool:
    try:
        return bool(redis_client(settings, "127.0.0.1", timeout=0.4).ping())
    except Exception:  # noqa: BLE001 - any failure is "unhealthy"
        return False


def replication_status(settings: Settings) -> dict[str, float]:
    """On the primary: connected replicas and the worst lag in seconds (Redis's per-replica 'lag')."""
    info = redis_client(settings, "127.0.0.1").info("replication")
    if info.get("role") != "master":
        return {"MasterLinkUp": 1.0 if info.get("master_link_status") == "up" else 0.0}
    replicas = [value for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)]
    online = [replica for replica in replicas if replica.get("state") == "online"]
    status = {"ReplicasConnected": float(len(online))}
    if online:
        status["ReplicationLagSeconds"] = float(max(int(replica.get("lag", 0)) for replica in online))
    return status


# --------------------------------------------------------------------------- VIP movers


def _aws_client(service: str, settings: Settings):
    import boto3
    from botocore.config import Config

    # botocore's standard retry mode backs off exponentially (with jitter) on throttling,
    # RequestLimitExceeded included, and on transient network errors.
    config = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=2, read_timeout=5)
    return boto3.client(service, region_name=settings.region, config=config)


class ElasticIpMover:
    """Reassociate an Elastic IP to this node's network interface (works across AZs)."""

    def __init__(self, ec2, allocation_id: str, network_interface_id: str) -> None:
        self.ec2, self.allocation_id, self.eni = ec2, allocation_id, network_interface_id

    def holder(self) -> str | None:
        [address] = self.ec2.describe_addresses(AllocationIds=[self.allocation_id])["Addresses"]
        return address.get("NetworkInterfaceId")

    def move_here(self) -> None:
        self.ec2.associate_address(AllocationId=self.allocation_id, NetworkInterfaceId=self.eni, AllowReassociation=True)


class SecondaryIpMover:
    """Reassign a secondary private IP to this node's network interface (one subnet)."""

    def __init__(self, ec2, address: str, network_interface_id: str) -> None:
        self.ec2, self.address, self.eni = ec2, address, network_interface_id

    def holder(self) -> str | None:
        [eni] = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[self.eni])["NetworkInterfaces"]
        held = {item["PrivateIpAddress"] for item in eni.get("PrivateIpAddresses", [])}
        return self.eni if self.address in held else None

    def move_here(self) -> None:
        self.ec2.assign_private_ip_addresses(NetworkInterfaceId=self.eni, PrivateIpAddresses=[self.address],
                                             AllowReassignment=True)  # fmt: skip


def make_mover(settings: Settings, ec2=None):
    mode = settings.vip["mode"]
    if mode == "l2":
        return None  # keepalived's virtual_ipaddress and gratuitous ARP are the whole move
    ec2 = ec2 or _aws_client("ec2", settings)
    if mode == "elasticIp":
        return ElasticIpMover(ec2, settings.vip["allocationId"], settings.vip["networkInterfaceId"])
    if mode == "secondaryIp":
        return SecondaryIpMover(ec2, settings.vip["address"], settings.vip["networkInterfaceId"])
    raise SystemExit(f"failover-agent: unknown vip.mode {mode!r} (elasticIp, secondaryIp or l2)")


def ensure_vip_here(settings: Settings, mover, confirm_timeout: float = 15.0, poll: float = 0.2) -> bool:
    """Move the VIP to this node unless it is already here; True when a move happened.

    ``mover`` may be a factory (called only here, so importing boto3 never delays the
    Redis promotion). Confirmed by reading the placement back: AWS applies it asynchronously.
    """
    if callable(mover):
        mover = mover()
    if mover is None or mover.holder() == mover.eni:
        return False
    started = time.monotonic()
    mover.move_here()
    called = time.monotonic()
    while mover.holder() != mover.eni:
        if time.monotonic() - started > confirm_timeout:
            log_event(settings, "vip_move_unconfirmed", mode=settings.vip["mode"], waited=confirm_timeout)
            raise VipMoveError(f"VIP not on {mover.eni} {confirm_timeout:.0f} s after the {settings.vip['mode']} call")
        time.sleep(poll)
    log_event(settings, "vip_moved", mode=settings.vip["mode"], to=mover.eni,
              call_seconds=round(called - started, 3), confirm_seconds=round(time.monotonic() - called, 3))  # fmt: skip
    return True


# --------------------------------------------------------------------------- reconcile


def reconcile(settings: Settings, mover=None, state: str | None = None) -> dict[str, Any]:
    """Make Redis's role and the VIP's placement follow keepalived's state (one locked pass)."""
    settings.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with settings.lock_file.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # overlapping notifies run one at a time, newest state wins
        state = state or read_state(settings)
        result: dict[str, Any] = {"state": state, "promoted": False, "following": False, "vip_moved": False}
        if state == "MASTER":
            result["promoted"] = promote(settings)
            result["vip_moved"] = ensure_vip_here(settings, mover)
        elif state in ("BACKUP", "FAULT"):
            result["following"] = follow_peer(settings)
        return result


def publish_metrics(settings: Settings, state: str, healthy: bool, cloudwatch=None, extra: dict[str, float] | None = None
                    ) -> list[dict[str, Any]]:  # fmt: skip
    dimensions = [{"Name": "Pair", "Value": settings.pair}, {"Name": "Node", "Value": settings.node}]
    values = {"IsMaster": 1.0 if state == "MASTER" else 0.0, "HealthCheckOk": 1.0 if healthy else 0.0, **(extra or {})}
    data = [{"MetricName": name, "Dimensions": dimensions, "Value": value,
             "Unit": "Seconds" if name.endswith("Seconds") else "Count"} for name, value in values.items()]  # fmt: skip
    if settings.metrics:
        (cloudwatch or _aws_client("cloudwatch", settings)).put_metric_data(Namespace=settings.metric_namespace, MetricData=data)
    return data


def run_once(settings: Settings, mover=None, cloudwatch=None) -> dict[str, Any]:
    state = read_state(settings)
    if state == "MASTER" and not keepalived_alive(settings):
        # keepalived died without a notify (kill -9, OOM): its last word is stale, and the
        # peer has taken over. Don't pull the VIP back; follow the new primary instead.
        log_event(settings, "keepalived_down", recorded_state=state)
        state = "FAULT"
    try:
        result = reconcile(settings, mover, state)
    except Exception as exc:  # noqa: BLE001 - keep the loop alive; the alarms see the state
        log_event(settings, "reconcile_failed", state=state, error=f"{type(exc).__name__}: {exc}")
        result = {"state": state, "error": str(exc)}
    healthy = redis_healthy(settings)
    extra: dict[str, float] = {}
    if healthy:
        try:
            extra = replication_status(settings)
        except Exception as exc:  # noqa: BLE001
            log_event(settings, "replication_status_failed", error=type(exc).__name__)
    result["metrics"] = publish_metrics(settings, state, healthy, cloudwatch, extra)
    return result


# --------------------------------------------------------------------------- commands


AUDIT_SCHEMA = "v1"  # components/storage/audit.py reads these events


def transition_event(settings: Settings, state: str) -> dict[str, Any]:
    """The ``failover.transition`` audit event: this node entered ``state`` (pure)."""
    return {"audit": AUDIT_SCHEMA, "event": "failover.transition",
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), "subject": f"keepalived@{settings.node}",
            "resource": settings.pair, "pair": settings.pair, "node": settings.node, "state": state}  # fmt: skip


def audit_transition(settings: Settings, state: str, firehose=None) -> bool:
    """Put the transition's audit event into the audit stream (the nodes run no log shipper).

    Called after the takeover, never before it: the VIP must not wait on an audit call. An
    event Firehose refuses stays in the node's event log and journal as ``audit_undelivered``.
    """
    if not settings.audit_stream:
        return False
    record = transition_event(settings, state)
    try:
        (firehose or _aws_client("firehose", settings)).put_record(
            DeliveryStreamName=settings.audit_stream, Record={"Data": json.dumps(record, sort_keys=True).encode()})
    except Exception as exc:  # noqa: BLE001 - an audit failure must not fail the transition
        log_event(settings, "audit_undelivered", record=record, error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def on_state(settings: Settings, state: str, mover, firehose=None) -> int:
    """One state change from keepalived: record it, reconcile, count a takeover, audit it."""
    write_state(settings, state)
    log_event(settings, "state", state=state)
    try:
        result = reconcile(settings, mover, state)
    except Exception as exc:  # noqa: BLE001 - the periodic run retries
        log_event(settings, "notify_reconcile_failed", state=state, error=f"{type(exc).__name__}: {exc}")
        audit_transition(settings, state, firehose)
        return 1
    if state == "MASTER" and settings.metrics:
        dims = [{"Name": "Pair", "Value": settings.pair}, {"Name": "Node", "Value": settings.node}]
        try:
            _aws_client("cloudwatch", settings).put_metric_data(
                Namespace=settings.metric_namespace,
                MetricData=[{"MetricName": "Failover", "Dimensions": dims, "Value": 1.0, "Unit": "Count"}])
        except Exception as exc:  # noqa: BLE001 - a missed count must not stop the takeover
            log_event(settings, "metric_failed", error=type(exc).__name__)
    log_event(settings, "reconciled", **result)
    audit_transition(settings, state, firehose)
    return 0


def follow_fifo(settings: Settings, fifo: str) -> None:
    """Read keepalived's notify FIFO (lines like ``INSTANCE "pair" MASTER 110``) until it closes.

    One process handles every change in order; its AWS client is made once, on the first
    MASTER, after the Redis promotion. keepalived SIGTERMs this reader when it stops; if
    keepalived dies instead, the FIFO closes and the reader exits (the restarted keepalived
    starts a new one).
    """
    import shlex

    movers: list[Any] = []

    def mover():
        if not movers:
            movers.append(make_mover(settings))
        return movers[0]

    with open(fifo) as events:  # blocks until keepalived opens its end
        for line in events:
            words = shlex.split(line)
            if len(words) >= 3 and words[0] == "INSTANCE" and words[2] in STATES:
                on_state(settings, words[2], mover)


def redis_auth_conf(password: str) -> str:
    """Redis ACL lines: the password-protected ``app`` user for clients and replication, and an
    unauthenticated ``default`` user that may only PING, so health checks need no secret."""
    return (f"user default on nopass resetchannels -@all +ping\n"
            f'user {REDIS_USER} on >{password} ~* &* +@all\n'
            f"masteruser {REDIS_USER}\nmasterauth \"{password}\"\n")  # fmt: skip


def bootstrap(settings: Settings, parameter: str, redis_auth_file: str, ssm=None) -> None:
    """At boot (root): put the Redis password from SSM where Redis and the agent read it."""
    password = (ssm or _aws_client("ssm", settings)).get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    for path, text in ((settings.password_file, password + "\n"),
                       (redis_auth_file, redis_auth_conf(password))):  # fmt: skip
        if path is None:
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="failover-agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=os.environ.get("FAILOVER_AGENT_SETTINGS", DEFAULT_SETTINGS))
    commands = parser.add_subparsers(dest="command", required=True)
    notify = commands.add_parser("notify", help="keepalived notify hook")
    notify.add_argument("state", type=str.upper, choices=STATES)
    fifo = commands.add_parser("notify-fifo", help="keepalived vrrp_notify_fifo_script (the FIFO comes last)")
    fifo.add_argument("fifo")
    commands.add_parser("reconcile", help="one reconcile pass")
    commands.add_parser("run", help="reconcile and publish metrics forever")
    boot = commands.add_parser("bootstrap", help="write the Redis password files from SSM (root, at boot)")
    boot.add_argument("--parameter", required=True)
    boot.add_argument("--redis-auth-file", required=True)
    args = parser.parse_args(argv)
    settings = Settings.load(args.settings)

    if args.command == "bootstrap":
        bootstrap(settings, args.parameter, args.redis_auth_file)
        return 0
    if args.command == "notify":
        return on_state(settings, args.state, lambda: make_mover(settings))
    if args.command == "notify-fifo":
        follow_fifo(settings, args.fifo)
        return 0
    mover = make_mover(settings)
    # One CloudWatch client for the life of the process, not one per pass.
    cloudwatch = _aws_client("cloudwatch", settings) if settings.metrics else None
    if args.command == "reconcile":
        log_event(settings, "reconciled", **run_once(settings, mover, cloudwatch))
        return 0
    while True:  # run
        started = time.monotonic()
        result = run_once(settings, mover, cloudwatch)
        if result.get("promoted") or result.get("following") or result.get("vip_moved") or result.get("error"):
            log_event(settings, "repaired", **{k: v for k, v in result.items() if k != "metrics"})
        time.sleep(max(0.0, settings.reconcile_interval - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())

"""A failover lab in network namespaces: two nodes, a client and an EC2 endpoint on one switch.

Shared by tests/failover/test_lab.py and bench/failover_bench.py. Every node runs the
real daemons (Debian's keepalived and redis-server) with the files the component
renders (components/failover/render.py: keepalived.conf, agent.json, the Redis include)
and the real node agent; only paths differ, as both nodes share one filesystem here.
The VIP mode is secondaryIp: keepalived adds the address on the node (what clients on
the switch reach) and the agent moves it on "EC2", a moto server in the client
namespace with AWS's reassignment semantics (tests/failover/aws_semantics.py) that
records each call's time.

Needs root, iproute2, iptables, keepalived and redis-server.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from components.config import FailoverConfig, VrrpConfig
from components.failover.runtime.failover_agent import REDIS_USER, redis_auth_conf
from components.failover.render import (
    NodePaths,
    PairLayout,
    agent_settings,
    node_files,
)

HERE = Path(__file__).resolve().parent
SUBNET = ipaddress.IPv4Network("10.99.0.0/24")
ADDRESSES = {"a": "10.99.0.10", "b": "10.99.0.11", "c": "10.99.0.100"}
VIP = "10.99.0.12"
EC2_PORT = 5000
PASSWORD = "lab-redis-password"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{ADDRESSES['c']}:{EC2_PORT}"}  # fmt: skip
PR_SET_CHILD_SUBREAPER = 36
REQUIRED_TOOLS = ("ip", "iptables", "keepalived", "redis-server")


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def ours() -> VrrpConfig:
    """The shipped defaults, except that the lab runs scripts as root (no system user here)."""
    return VrrpConfig(script_user="root")


def keepalived_default() -> VrrpConfig:
    """keepalived's own default timing (VRRPv2, 1 s adverts), for comparison."""
    return VrrpConfig(version=2, advert_interval=1, script_user="root")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Lab:
    def __init__(self, workdir: Path, vrrp: VrrpConfig, tag: str | None = None) -> None:
        self.workdir = workdir
        self.tag = tag or f"fo{os.getpid() % 100000}"
        self.ns = {role: f"{self.tag}-{role}" for role in ("sw", "a", "b", "c")}
        self.config = FailoverConfig(vrrp=vrrp, reconcile_interval_seconds=5)
        self.layout = PairLayout("secondaryIp", "eth0", {n: ipaddress.IPv4Address(ADDRESSES[n]) for n in "ab"},
                                 {n: SUBNET.prefixlen for n in "ab"}, {n: None for n in "ab"},
                                 ipaddress.IPv4Interface(f"{VIP}/{SUBNET.prefixlen}"))  # fmt: skip
        self.pair = "lab"
        self.procs: dict[str, subprocess.Popen] = {}
        self.eni: dict[str, str] = {}
        self.run_ids: dict[str, str] = {}

    # -- topology --------------------------------------------------------------------------

    def up(self) -> Lab:
        # Orphans (keepalived's VRRP child after its parent is killed) become our children.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        for ns in self.ns.values():
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        sw = self.ns["sw"]
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "br0", "up")
        for host in ("a", "b", "c"):
            inside, outside = f"{self.tag}{host}i", f"{self.tag}{host}o"
            _run("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            _run("ip", "link", "set", inside, "netns", self.ns[host])
            _run("ip", "link", "set", outside, "netns", sw)
            _run("ip", "-n", self.ns[host], "link", "set", inside, "name", "eth0")
            _run("ip", "-n", self.ns[host], "addr", "add", f"{ADDRESSES[host]}/{SUBNET.prefixlen}", "dev", "eth0")
            _run("ip", "-n", self.ns[host], "link", "set", "eth0", "up")
            _run("ip", "-n", sw, "link", "set", outside, "master", "br0", "up")
        self._start_ec2()
        for node in "ab":
            self._write_node_files(node)
            self.start_redis(node)
        for node in "ab":
            self.run_ids[node] = self.redis(node).info("server")["run_id"]
        for node in "ab":
            self.start_keepalived(node)
            self.start_agent(node)
        return self

    def down(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.procs.pop(name)
        for ns in self.ns.values():
            for pid in _run("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _run("ip", "netns", "del", ns, check=False)

    def __enter__(self) -> Lab:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.down()

    def _spawn(self, name: str, ns: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)  # fmt: skip
        self.procs[name] = proc
        return proc

    # -- EC2 endpoint ------------------------------------------------------------------------

    def _start_ec2(self) -> None:
        self.ec2_calls = self.workdir / "ec2-calls.jsonl"
        self.ec2_calls.touch()
        self._spawn("ec2", self.ns["c"], [sys.executable, str(HERE / "aws_semantics.py"), ADDRESSES["c"], str(EC2_PORT),
                                          str(self.ec2_calls)])  # fmt: skip
        deadline = time.monotonic() + 30
        while b"ready" not in (self.workdir / "ec2.log").read_bytes():
            if time.monotonic() > deadline or self.procs["ec2"].poll() is not None:
                raise RuntimeError("the lab's EC2 endpoint did not start: " + (self.workdir / "ec2.log").read_text())
            time.sleep(0.05)
        ec2 = self.ec2()
        vpc = ec2.create_vpc(CidrBlock=str(SUBNET))["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=str(SUBNET))["Subnet"]["SubnetId"]
        for node in "ab":
            self.eni[node] = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress=ADDRESSES[node]
                                                          )["NetworkInterface"]["NetworkInterfaceId"]  # fmt: skip

    def ec2(self):
        """A client of the lab's EC2, from the test process (through the client namespace's address)."""
        return _NamespacedClient(self.ns["c"], "ec2")

    def vip_holder_in_ec2(self) -> str | None:
        holders = [node for node, eni in self.eni.items() if VIP in self.ec2().eni_addresses(eni)]
        return ",".join(holders) or None

    def ec2_assignments(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.ec2_calls.read_text().splitlines() if line]

    # -- nodes -------------------------------------------------------------------------------

    def paths(self, node: str) -> NodePaths:
        base = self.workdir / node
        return NodePaths(install_dir=str(base / "opt"), python=sys.executable, settings=str(base / "agent.json"),
                         password_file=str(base / "redis.pass"), redis_auth_file=str(base / "redis-auth.conf"),
                         redis_include=str(base / "redis.conf"), keepalived_conf=str(base / "keepalived.conf"),
                         state_dir=str(base / "state"), event_log=str(base / "events.jsonl"),
                         vrrp_pid_file=str(base / "vrrp.pid"), redis_cli=shutil.which("redis-cli"))  # fmt: skip

    def _write_node_files(self, node: str) -> None:
        paths = self.paths(node)
        base = self.workdir / node
        (base / "state").mkdir(parents=True, exist_ok=True)
        (base / "data").mkdir(exist_ok=True)
        settings = agent_settings(self.layout, node, self.config, self.pair, region="us-east-1",
                                  network_interface_id=self.eni[node], paths=paths)  # fmt: skip
        for path, content in node_files(self.layout, node, self.config, self.pair, settings,
                                        redis_data_dir=str(base / "data"), paths=paths).items():  # fmt: skip
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
            if path in (paths.agent, paths.health_check):
                Path(path).chmod(0o755)
        Path(paths.password_file).write_text(PASSWORD + "\n")
        Path(paths.redis_auth_file).write_text(redis_auth_conf(PASSWORD))
        (base / "redis-main.conf").write_text(
            f"include {paths.redis_include}\ndaemonize no\nlogfile {base / 'redis.log'}\nsave \"\"\n")

    def start_redis(self, node: str) -> None:
        self._spawn(f"redis-{node}", self.ns[node], ["redis-server", str(self.workdir / node / "redis-main.conf")])
        self._wait(lambda: self._answers(node), f"redis on node {node}")

    def start_keepalived(self, node: str) -> None:
        base = self.workdir / node
        self._spawn(f"keepalived-{node}", self.ns[node],
                    ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
                     "-f", self.paths(node).keepalived_conf, "-p", str(base / "keepalived.pid"),
                     "-r", self.paths(node).vrrp_pid_file], env=AWS_ENV)  # fmt: skip

    def start_agent(self, node: str) -> None:
        paths = self.paths(node)
        self._spawn(f"agent-{node}", self.ns[node], [paths.python, paths.agent, "--settings", paths.settings, "run"],
                    env=AWS_ENV)  # fmt: skip

    def redis(self, node: str, host: str | None = None):
        return _NamespacedRedis(self.ns[node], host or "127.0.0.1")

    def _answers(self, node: str) -> bool:
        try:
            return bool(self.redis(node).ping())
        except Exception:  # noqa: BLE001
            return False

    def state(self, node: str) -> str | None:
        try:
            return (self.workdir / node / "state" / "state").read_text().strip()
        except FileNotFoundError:
            return None

    def holds_vip(self, node: str) -> bool:
        out = _run("ip", "-n", self.ns[node], "-o", "-4", "addr", "show", "dev", "eth0").stdout
        return f" {VIP}/" in out

    def role(self, node: str) -> tuple[str, str | None]:
        role = self.redis(node).role()
        return role[0], (role[1] if role[0] == "slave" else None)

    def snapshot(self) -> dict[str, Any]:
        """What each node looks like right now (for failure messages)."""
        view: dict[str, Any] = {}
        for node in "ab":
            try:
                role = self.role(node)
            except Exception as exc:  # noqa: BLE001
                role = f"unreachable ({type(exc).__name__})"
            view[node] = {"state": self.state(node), "vip_here": self.holds_vip(node), "redis": role}
        try:
            view["ec2_vip"] = self.vip_holder_in_ec2()
        except Exception as exc:  # noqa: BLE001
            view["ec2_vip"] = f"unknown ({type(exc).__name__})"
        return view

    def masters(self) -> list[str]:
        return [node for node in "ab" if self.state(node) == "MASTER"]

    def _wait(self, condition, what: str, timeout: float = 30.0, stable: float = 0.0) -> float:
        """Until ``condition`` holds (for ``stable`` seconds in a row); the time until it first held."""
        started = time.monotonic()
        held_since = None
        while True:
            now = time.monotonic()
            if condition():
                held_since = now if held_since is None else held_since
                if now - held_since >= stable:
                    return held_since - started
            else:
                held_since = None
            if now - started > timeout:
                raise TimeoutError(f"lab: {what} not reached within {timeout:.0f} s; now: {self.snapshot()}")
            time.sleep(0.02)

    def wait_settled(self, master: str | None = None, timeout: float = 30.0) -> str:
        """Until exactly one node is MASTER, holds the VIP alone, and the other replicates from it."""

        def settled() -> bool:
            masters = self.masters()
            if len(masters) != 1 or (master and masters != [master]):
                return False
            primary = masters[0]
            other = "b" if primary == "a" else "a"
            try:
                kind, following = self.role(other)
                link = self.redis(other).info("replication").get("master_link_status")
            except Exception:  # noqa: BLE001
                return False
            return (self.holds_vip(primary) and not self.holds_vip(other) and self.role(primary)[0] == "master"
                    and kind == "slave" and following == ADDRESSES[primary] and link == "up")  # fmt: skip

        # Stable for a second: at start-up both nodes can hold MASTER for a moment.
        self.settled_in = self._wait(settled, f"one master{' (' + master + ')' if master else ''}, VIP on it, the other replicating",
                   timeout, stable=1.0)  # fmt: skip
        return self.masters()[0]

    # -- faults ------------------------------------------------------------------------------

    def kill_keepalived(self, node: str) -> None:
        """SIGKILL every keepalived process of the node (the VRRP child runs in its own session).

        The orphaned VRRP child is reaped here, as systemd would on a node: this process is a
        child subreaper (see up()), so an unreaped zombie doesn't look like a running daemon.
        """
        proc = self.procs.pop(f"keepalived-{node}")
        killed = []
        for pid in _run("ip", "netns", "pids", self.ns[node]).stdout.split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "keepalived":
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
            except (FileNotFoundError, ProcessLookupError):
                pass
        proc.wait()
        for pid in killed:
            if pid != proc.pid:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass

    def kill_redis(self, node: str) -> None:
        proc = self.procs.pop(f"redis-{node}")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def link(self, node: str, up: bool) -> None:
        _run("ip", "-n", self.ns["sw"], "link", "set", f"{self.tag}{node}o", "up" if up else "down")

    def block_vrrp(self, node: str, blocked: bool) -> None:
        _run("ip", "netns", "exec", self.ns[node], "iptables", "-A" if blocked else "-D", "INPUT", "-p", "vrrp", "-j", "DROP")

    # -- client ------------------------------------------------------------------------------

    def start_probe(self, name: str) -> Path:
        out = self.workdir / f"probe-{name}.log"
        self._spawn(f"probe-{name}", self.ns["c"],
                    [sys.executable, str(HERE / "probe.py"), "--host", VIP, "--password-file",
                     self.paths("a").password_file, "--user", REDIS_USER, "--prefix", name])  # fmt: skip
        self._wait(lambda: out.exists() and b"ready" in out.read_bytes(), "the client probe")
        return out

    def stop_probe(self, name: str) -> list[dict[str, Any]]:
        proc = self.procs.pop(f"probe-{name}")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        lines = (self.workdir / f"probe-{name}.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and '"ready"' not in line]


class _NamespacedRedis:
    """A redis client that runs each command inside a namespace (the test process stays outside)."""

    def __init__(self, ns: str, host: str) -> None:
        self.ns, self.host = ns, host

    def _call(self, *command: str, as_json: bool = True) -> str:
        out = _run("ip", "netns", "exec", self.ns, "redis-cli", "-h", self.host, "--no-auth-warning", "--user", REDIS_USER, "--pass", PASSWORD,
                   *(["--json"] if as_json else []), *command)  # fmt: skip
        if out.returncode or out.stdout.startswith('"ERR') or not out.stdout.strip():
            raise ConnectionError(f"redis-cli {' '.join(command)} in {self.ns}: {out.stdout.strip()} {out.stderr.strip()}")
        return out.stdout

    def ping(self) -> bool:
        return json.loads(self._call("PING")) == "PONG"

    def role(self) -> list[Any]:
        return json.loads(self._call("ROLE"))

    def info(self, section: str) -> dict[str, str]:
        text = self._call("INFO", section, as_json=False)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def get(self, key: str) -> str | None:
        return json.loads(self._call("GET", key))

    def mget(self, keys: list[str]) -> list[str | None]:
        values: list[str | None] = []
        for start in range(0, len(keys), 500):
            values.extend(json.loads(self._call("MGET", *keys[start:start + 500])))
        return values


class _NamespacedClient:
    """The few EC2 calls the lab makes, run by boto3 inside the client namespace."""

    def __init__(self, ns: str, service: str) -> None:
        self.ns, self.service = ns, service

    def _boto(self, method: str, **kwargs: Any) -> Any:
        script = ("import boto3, json, sys; kw = json.loads(sys.argv[2]); "
                  "print(json.dumps(getattr(boto3.client(sys.argv[1]), sys.argv[3])(**kw), default=str))")  # fmt: skip
        out = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", script, self.service,
                              json.dumps(kwargs), method], capture_output=True, text=True,
                             env={**os.environ, **AWS_ENV})  # fmt: skip
        if out.returncode:
            raise RuntimeError(f"{self.service}.{method} in {self.ns}: {out.stderr.strip()[-500:]}")
        return json.loads(out.stdout)

    def __getattr__(self, method: str):
        return lambda **kwargs: self._boto(method, **kwargs)

    def eni_addresses(self, eni: str) -> set[str]:
        [found] = self._boto("describe_network_interfaces", NetworkInterfaceIds=[eni])["NetworkInterfaces"]
        return {item["PrivateIpAddress"] for item in found["PrivateIpAddresses"]}




# --------------------------------------------------------------------------- scenarios

SCENARIOS = ("keepalived-killed", "link-down", "redis-crashed", "split-brain")


def _records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[:-1] if line.startswith("{") and '"ready"' not in line]


def _inject(lab: Lab, scenario: str, node: str) -> None:
    {"keepalived-killed": lab.kill_keepalived, "redis-crashed": lab.kill_redis,
     "link-down": lambda n: lab.link(n, up=False)}[scenario](node)  # fmt: skip


def _heal(lab: Lab, scenario: str, node: str) -> None:
    """What systemd or the operator does afterwards: restart the daemon, restore the link or the path."""
    {"keepalived-killed": lab.start_keepalived, "redis-crashed": lab.start_redis,
     "link-down": lambda n: lab.link(n, up=True)}[scenario](node)  # fmt: skip


def run_scenario(lab: Lab, scenario: str, timeout: float = 30.0) -> dict[str, Any]:
    """Fault the primary (split brain: cut VRRP between the nodes), measure, heal, check the pair settles.

    ``failover_seconds``: from the fault to the first write through the VIP that the new
    node accepted. ``lost``: writes acknowledged with WAIT 1 before or during the fault that
    the primary afterwards doesn't have.
    """
    primary = lab.wait_settled()
    backup = "b" if primary == "a" else "a"
    probe = lab.start_probe(f"{scenario}-{time.monotonic_ns()}")
    time.sleep(1.0)
    result: dict[str, Any] = {"scenario": scenario, "old_primary": primary}
    if scenario == "split-brain":
        # Cut VRRP both ways (a one-way cut to the higher-priority node isn't a split brain:
        # the other node hears its adverts and steps down).
        for node in "ab":
            lab.block_vrrp(node, True)
        fault_at = time.monotonic()
        lab._wait(lambda: sorted(lab.masters()) == ["a", "b"], "both nodes MASTER", timeout)
        result["both_master_after"] = time.monotonic() - fault_at
        time.sleep(1.0)
        for node in "ab":
            lab.block_vrrp(node, False)
        winner = lab.wait_settled(timeout=timeout)
        result["settled_after_heal"] = lab.settled_in
    else:
        fault_at = time.monotonic()
        _inject(lab, scenario, primary)
        new_run = lab.run_ids[backup]

        def new_node_serves() -> bool:
            return any(r["t"] >= fault_at and r.get("run_id") == new_run and "error" not in r for r in _records(probe))

        lab._wait(new_node_serves, f"writes through the VIP reaching node {backup}", timeout)
        first = min((r for r in _records(probe) if r["t"] >= fault_at and r.get("run_id") == new_run and "error" not in r),
                    key=lambda r: r["t"])  # fmt: skip
        result["failover_seconds"] = first["done"] - fault_at
        time.sleep(0.5)
        _heal(lab, scenario, primary)
        if scenario == "redis-crashed":
            lab.run_ids[primary] = lab.redis(primary).info("server")["run_id"]
        winner = lab.wait_settled(master=backup, timeout=timeout)
    records = lab.stop_probe(probe.name[len("probe-"):-len(".log")])
    acked = [r["key"] for r in records if r.get("acked", 0) >= 1]
    values = lab.redis(winner).mget(acked) if acked else []
    result |= {"new_primary": winner, "writes": len(records), "acked": len(acked),
               "lost": sum(value is None for value in values)}  # fmt: skip
    lab._wait(lambda: lab.vip_holder_in_ec2() == winner, f"EC2 placing the VIP on node {winner}", timeout)
    return result

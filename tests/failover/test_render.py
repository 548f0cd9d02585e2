"""The rendered node files: checked by keepalived itself, property-tested layouts, the CLI."""

from __future__ import annotations

import base64
import gzip
import ipaddress
import subprocess

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from components.config import FailoverConfig, NetworkConfig, VrrpConfig
from components.failover.render import (
    AL2023_PATHS,
    PATHS,
    agent_settings,
    aws_layout,
    cloud_init,
    compressed_user_data,
    keepalived_conf,
    node_files,
    on_prem_layout,
)
from platformctl.cli import app
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS

EXAMPLES = ROOT / "examples" / "stacks"
ALL_STACKS = [(stack, None) for stack in STACKS] + [("hybrid", EXAMPLES)]


def _config(stack, stacks_dir):
    return load_stack_config(stack, ROOT, stacks_dir)


def _layouts():
    for stack, stacks_dir in ALL_STACKS:
        config = _config(stack, stacks_dir)
        if config.failover is None:
            continue
        yield f"{stack}-aws", config.failover, aws_layout(config.failover, config.network)
        if config.failover.on_prem is not None:
            yield f"{stack}-onPrem", config.failover, on_prem_layout(config.failover)


LAYOUTS = list(_layouts())


def keepalived_test(conf: str, interface: str, address: str, tmp_path, tag: str) -> subprocess.CompletedProcess:
    """``keepalived -t`` in a namespace that has the config's interface and address.

    keepalived 2.2.7 (Debian 12) ends a *passing* test by killing itself with SIGTERM when
    script_user is set (acassen/keepalived#2617, fixed in 2.2.8); any problem it finds is
    printed first, so a pass is: exit 0 or SIGTERM, and nothing printed.
    """
    path = tmp_path / f"{tag}.conf"
    path.write_text(conf)
    ns = f"kt{abs(hash(tag)) % 10**8}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", interface, "type", "veth", "peer", "name", "peer0"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", interface], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", interface, "up"], check=True)
        return subprocess.run(["ip", "netns", "exec", ns, "keepalived", "-t", "-f", str(path)], capture_output=True,
                              text=True)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _passes(result: subprocess.CompletedProcess) -> bool:
    return result.returncode in (0, -15) and not result.stdout.strip() and not result.stderr.strip()


@pytest.mark.parametrize("name,config,layout", LAYOUTS, ids=[name for name, _, _ in LAYOUTS])
@pytest.mark.parametrize("node", ["a", "b"])
def test_keepalived_accepts_every_rendered_config(script_user, tmp_path, name, config, layout, node):
    conf = keepalived_conf(layout, node, config.vrrp, f"platform-{name}")
    result = keepalived_test(conf, layout.interface, str(layout.addresses[node]), tmp_path, f"{name}-{node}")
    assert _passes(result), (result.returncode, result.stdout, result.stderr)


def test_the_keepalived_check_fails_on_a_broken_config(script_user, tmp_path):
    name, config, layout = LAYOUTS[0]
    conf = keepalived_conf(layout, "a", config.vrrp, "platform-x")
    for broken in (conf.replace("unicast_peer {", "unicast_peers {"), conf.replace("advert_int", "advert_intervall"),
                   conf.replace(f"interface {layout.interface}", "interface nosuch0")):  # fmt: skip
        assert not _passes(keepalived_test(broken, layout.interface, str(layout.addresses["a"]), tmp_path, "broken"))


def test_rendered_keepalived_conf_has_the_safety_settings():
    _, config, layout = LAYOUTS[0]
    conf = keepalived_conf(layout, "a", config.vrrp, "pair")
    for line in ("state BACKUP", "nopreempt", "unicast_fault_no_peer", "enable_script_security",
                 f"script_user {config.vrrp.script_user}", f"unicast_src_ip {layout.addresses['a']}",
                 f"fall {config.vrrp.health_fall}", f"rise {config.vrrp.health_rise}", "vrrp_version 3",
                 "advert_int 0.1"):  # fmt: skip
        assert line in conf, line
    assert f"\n        {layout.addresses['b']}\n" in conf  # the peer, and only the peer
    assert "vrrp_notify_fifo " in conf and 'notify-fifo"' in conf  # ordered state changes, one reader


@pytest.mark.parametrize("stack", STACKS)
def test_cloud_init_carries_the_rendered_files_and_fits_ec2s_limit(stack):
    config = _config(stack, None)
    layout = aws_layout(config.failover, config.network)
    settings_a = agent_settings(layout, "a", config.failover, "pair", region="us-east-1", network_interface_id="eni-1")
    text = cloud_init(layout, "a", config.failover, "pair", settings_a, "/platform/pair/redis-password", "us-east-1")
    packed = compressed_user_data(text)
    assert len(base64.b64decode(packed)) <= 16384
    document = yaml.safe_load(gzip.decompress(base64.b64decode(packed)).decode().removeprefix("#cloud-config\n"))
    files = {f["path"]: gzip.decompress(base64.b64decode(f["content"])).decode() for f in document["write_files"]}
    expected = node_files(layout, "a", config.failover, "pair", settings_a, paths=AL2023_PATHS)
    for path, content in expected.items():
        assert files[path] == content, path
    assert files[AL2023_PATHS.health_check].count("/usr/bin/redis6-cli") == 1
    # keepalived is started with the VRRP pid file the agent checks (no reliance on a default).
    dropin = files["/etc/systemd/system/keepalived.service.d/restart.conf"]
    assert f"--vrrp_pid={settings_a['vrrpPidFile']}" in dropin and "Restart=always" in dropin
    assert "keepalived" in document["packages"] and "redis6" in document["packages"]
    commands = [" ".join(c) for c in document["runcmd"]]
    assert any("--require-hashes" in c for c in commands)
    assert any("bootstrap --parameter /platform/pair/redis-password" in c for c in commands)


# -- layout properties -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(min_value=4, max_value=200), mode=st.sampled_from(["secondaryIp", "elasticIp"]),
       second_octet=st.integers(min_value=0, max_value=255))  # fmt: skip
def test_aws_layout_places_both_nodes_and_the_vip_inside_their_subnets(offset, mode, second_octet):
    network = NetworkConfig(vpc_cidr=f"10.{second_octet}.0.0/16", availability_zones=["us-east-1a", "us-east-1b"])
    extra = {"client_cidrs": ["192.168.0.0/24"]} if mode == "elasticIp" else {}
    config = FailoverConfig(vip_mode=mode, host_offset=offset, **extra)
    layout = aws_layout(config, network)
    addresses = list(layout.addresses.values()) + ([layout.vip.ip] if layout.vip else [])
    assert len(set(addresses)) == len(addresses)
    for node, address in layout.addresses.items():
        subnet = ipaddress.IPv4Network(f"{address}/{layout.prefixlen[node]}", strict=False)
        assert int(address) - int(subnet.network_address) >= 4  # AWS keeps the first four addresses
        assert address != subnet.broadcast_address and address in network.vpc_cidr
    if mode == "secondaryIp":
        assert layout.azs["a"] == layout.azs["b"] and layout.vip.ip in layout.vip.network
        assert all(address in layout.vip.network for address in layout.addresses.values())
    else:
        assert layout.azs["a"] != layout.azs["b"] and layout.vip is None


@pytest.mark.parametrize("raw,key,message", [
    ({"vrrp": {"version": 2, "advertInterval": 0.5}}, "vrrp.advertInterval", "whole seconds"),
    ({"vrrp": {"advertInterval": 0.125}}, "vrrp.advertInterval", "centiseconds"),
    ({"vipMode": "elasticIp"}, "clientCidrs", "required for elasticIp"),
    ({"vipMode": "elasticIp", "clientCidrs": ["0.0.0.0/0"]}, "clientCidrs", "internet"),
    ({"availabilityZones": ["us-east-1a", "us-east-1b"]}, "availabilityZones", "one AZ for secondaryIp"),
    ({"onPrem": {"interface": "eth0", "nodeAddresses": ["10.1.0.2", "10.2.0.3"], "vip": "10.1.0.9/24"}},
     "onPrem.nodeAddresses", "not in the VIP's subnet"),
])  # fmt: skip
def test_bad_failover_config_names_the_key(raw, key, message):
    from components.config import ConfigError, parse_config

    base = {"platform:environment": "dev", "platform:aws": '{"region": "us-east-1"}',
            "platform:tags": '{"costCenter": "x", "owner": "o@example.com"}'}  # fmt: skip
    import json

    with pytest.raises(ConfigError) as error:
        parse_config({**base, "platform:failover": json.dumps(raw)}, set(), "stacks/Pulumi.test.yaml")
    text = str(error.value)
    assert f"platform:failover.{key}" in text.replace("[0]", "").replace("[1]", "") and message in text, text


def test_failover_az_must_be_a_network_az():
    from components.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"platform:failover\.availabilityZones\[0\].*us-east-1f"):
        parse_config({"platform:environment": "dev", "platform:aws": '{"region": "us-east-1"}',
                      "platform:tags": '{"costCenter": "x", "owner": "o@example.com"}',
                      "platform:failover": '{"availabilityZones": ["us-east-1f"]}'}, set(), "s")  # fmt: skip


def test_vrrp_version_2_accepts_whole_seconds():
    assert VrrpConfig(version=2, advert_interval=1).advert_interval == 1


# -- platformctl failover render ---------------------------------------------------------------


def test_render_prints_an_on_prem_node_with_a_plain_l2_vip_and_no_secret():
    result = CliRunner().invoke(app, ["failover", "render", "--stack", "hybrid", "--stacks-dir", str(EXAMPLES),
                                      "--node", "b", "--project-dir", str(ROOT)])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "# ==> /etc/keepalived/keepalived.conf <==" in out and "192.168.40.20/24 dev bond0" in out
    assert "unicast_src_ip 192.168.40.22" in out and '"mode": "l2"' in out
    assert "# ==> /opt/platform-failover/check-redis <==" in out
    assert "requirepass" not in out and "secure:" not in out


def test_render_writes_files_for_the_aws_site(tmp_path):
    result = CliRunner().invoke(app, ["failover", "render", "--stack", "prod", "--site", "aws", "--node", "a",
                                      "--output-dir", str(tmp_path), "--project-dir", str(ROOT)])  # fmt: skip
    assert result.exit_code == 0, result.output
    conf = (tmp_path / "etc/keepalived/keepalived.conf").read_text()
    assert "interface ens5" in conf and "unicast_src_ip 10.40." in conf
    assert (tmp_path / PATHS.agent.lstrip("/")).stat().st_mode & 0o111


def test_render_refuses_a_stack_without_an_on_prem_pair():
    result = CliRunner().invoke(app, ["failover", "render", "--stack", "dev", "--site", "onPrem",
                                      "--project-dir", str(ROOT)])  # fmt: skip
    assert result.exit_code == 2 and "platform:failover.onPrem is not set" in result.output

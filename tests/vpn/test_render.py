"""The on-prem render: each file checked by the tool that consumes it, secrets kept apart, CLI guards."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from components.vpn import render
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS

EXAMPLES = ROOT / "examples" / "stacks"
PLATFORMCTL = [sys.executable, "-m", "platformctl.cli"]
KEYS = ["Kx7pLm2QrT9vWn4YbZc8Ds", "Hq3Fj6Ng1Ps5Ru0Tv7Wx2Y"]
# (stack, stacks dir): every stack, and the static-routing example behind NAT.
TARGETS = [(stack, None) for stack in STACKS] + [("hybrid", EXAMPLES)]


def _config(stack, stacks_dir):
    return load_stack_config(stack, ROOT, stacks_dir)


def _outputs(config, keys=KEYS) -> dict:
    return {"vpn": {"connectionId": "vpn-0123456789abcdef0", "tunnels": [
                {"outsideAddress": f"192.0.2.{index + 101}", "insideCidr": str(tunnel.inside_cidr)}
                for index, tunnel in enumerate(config.vpn.tunnels)]},
            "vpnPreSharedKeys": list(keys)}  # fmt: skip


@pytest.fixture(params=TARGETS, ids=[stack for stack, _ in TARGETS])
def rendered(request):
    config = _config(*request.param)
    gw = render.gateway(config, _outputs(config))
    return config, gw, render.onprem_files(gw)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `make` installs it as root (Makefile DEB_PACKAGES)")
    return path


def test_frr_accepts_the_bgp_or_static_config(rendered, tmp_path):
    config, gw, files = rendered
    path = tmp_path / "frr.conf"
    path.write_text(files[render.FRR_FILE])
    result = subprocess.run([_tool("vtysh"), "--dryrun", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = files[render.FRR_FILE]
    if config.vpn.routing == "bgp":
        for tunnel in gw.tunnels:
            assert f"neighbor {tunnel.inside.aws.ip} remote-as {config.vpn.amazon_side_asn}" in text
            assert f"neighbor {tunnel.inside.aws.ip} timers 10 30" in text
        assert [line.split()[-1] for line in text.splitlines() if line.startswith("  network ")] == [
            str(c) for c in config.vpn.on_prem_cidrs]  # announce only the private cloud's networks
        assert f"permit {config.network.vpc_cidr}" in text  # accept only the VPC
    else:
        assert f"ip route {config.network.vpc_cidr} {gw.tunnels[0].name} 10" in text
        assert f"ip route {config.network.vpc_cidr} {gw.tunnels[1].name} 20" in text


def test_frr_dry_run_rejects_a_broken_config(tmp_path):
    path = tmp_path / "frr.conf"
    path.write_text("router bgp 65010\n neighbor 169.254.10.1 remote-as\n")
    assert subprocess.run([_tool("vtysh"), "--dryrun", "-f", str(path)], capture_output=True, text=True).returncode != 0


def test_the_scripts_pass_shellcheck_and_the_unit_passes_systemd_analyze(rendered, tmp_path):
    _, gw, files = rendered
    for relative in render.EXECUTABLES:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[relative])
        path.chmod(0o755)
        result = subprocess.run([_tool("shellcheck"), "--shell=sh", "--severity=style", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
    # systemd-analyze checks that ExecStart exists: point the unit at the rendered copy.
    unit = tmp_path / "aws-vpn-interfaces.service"
    unit.write_text(files[render.UNIT_FILE].replace("/etc/", f"{tmp_path}/"))
    result = subprocess.run([_tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Type=oneshot", "Type=oneshot-ish"))
    assert "Failed to parse service type" in subprocess.run([_tool("systemd-analyze"), "verify", str(broken)],
                                                            capture_output=True, text=True).stderr  # fmt: skip


def test_the_interfaces_script_and_updown_hook_agree_with_the_connections(rendered):
    config, gw, files = rendered
    interfaces, updown, connections = files[render.INTERFACES_FILE], files[render.UPDOWN_FILE], files[render.CONNECTIONS_FILE]
    for tunnel in gw.tunnels:
        assert (f"ip link add {tunnel.name} type xfrm dev {config.vpn.on_prem.outside_interface} if_id {tunnel.if_id}"
                in interfaces)  # fmt: skip
        assert f"ip address replace {tunnel.inside.customer} dev {tunnel.name}" in interfaces
        assert f"if_id_in = {tunnel.if_id}" in connections and f"if_id_out = {tunnel.if_id}" in connections
        assert f"{tunnel.name}) interface={tunnel.name} ;;" in updown
    assert connections.count(f"updown = /etc/{render.UPDOWN_FILE}") == 2
    assert f"local_addrs = {config.vpn.on_prem.local_address or config.vpn.customer_gateway.ip_address}" in connections
    assert f"id = {config.vpn.customer_gateway.ip_address}" in connections  # the public address, behind NAT too


def test_secrets_live_only_in_the_secrets_file(rendered):
    _, gw, files = rendered
    for relative, content in files.items():
        for key in KEYS:
            assert (key in content) == (relative == render.SECRETS_FILE), relative
    assert render.SECRET_FILES == {render.SECRETS_FILE}
    without = render.onprem_files(render.gateway(_config("dev", None), _outputs(_config("dev", None)), with_secrets=False),
                                  with_secrets=False)  # fmt: skip
    assert render.SECRETS_FILE not in without


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.pop("vpn"), "output vpn.tunnels is missing"),
    (lambda o: o["vpn"]["tunnels"].pop(), "output vpn.tunnels has 1 entries, not 2"),
    (lambda o: o.update(vpnPreSharedKeys="[secret]"), "output vpnPreSharedKeys is masked: read the outputs with --show-secrets"),
    (lambda o: o.update(vpnPreSharedKeys=["only-one"]), "output vpnPreSharedKeys is missing or not two keys"),
    (lambda o: o["vpn"]["tunnels"][1].update(insideCidr="169.254.99.0/30"),
     "output vpn.tunnels[1].insideCidr is '169.254.99.0/30' but platform:vpn.tunnels[1].insideCidr is 169.254.10.4/30: run `pulumi up` first"),
    (lambda o: o["vpn"]["tunnels"][0].update(outsideAddress="[unknown]"), "output vpn.tunnels[0].outsideAddress is not an IPv4 address"),
])  # fmt: skip
def test_outputs_that_dont_fit_are_named(mutate, message):
    config = _config("dev", None)
    outputs = _outputs(config)
    mutate(outputs)
    with pytest.raises(render.OutputsError) as info:
        render.gateway(config, outputs)
    assert message in str(info.value)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLATFORMCTL, "vpn", "onprem-config", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin, env={**os.environ, "PATH": os.path.dirname(sys.executable)}, timeout=120)  # fmt: skip


def test_the_cli_writes_the_gateway_files_with_safe_modes(tmp_path):
    config = _config("dev", None)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(_outputs(config)))
    target = tmp_path / "etc"
    result = _cli("--stack", "dev", "--outputs", str(outputs), "--output-dir", str(target))
    assert result.returncode == 0, result.stderr
    assert "wrote 7 of 7 files" in result.stdout
    assert stat.S_IMODE((target / render.SECRETS_FILE).stat().st_mode) == 0o600
    for relative in render.EXECUTABLES:
        assert stat.S_IMODE((target / relative).stat().st_mode) == 0o755
    assert KEYS[0] in (target / render.SECRETS_FILE).read_text()
    again = _cli("--stack", "dev", "--outputs", str(outputs), "--output-dir", str(target))
    assert "wrote 0 of 7 files" in again.stdout and "(7 unchanged)" in again.stdout
    assert not [p for p in target.rglob(".*") if p.is_file()], "no temporary files left behind"


def test_the_cli_never_shows_or_commits_secrets(tmp_path):
    config = _config("dev", None)
    text = json.dumps(_outputs(config))
    printed = _cli("--stack", "dev", "--outputs", "-", stdin=text)
    assert printed.returncode == 0, printed.stderr
    assert "/etc/swanctl/conf.d/aws-vpn.conf" in printed.stdout and not any(k in printed.stdout for k in KEYS)
    assert "pre-shared keys not shown" in printed.stdout
    inside = _cli("--stack", "dev", "--outputs", "-", "--output-dir", str(ROOT / "build-gateway"), stdin=text)
    assert inside.returncode == 2 and "is inside the repository" in inside.stderr
    assert not (ROOT / "build-gateway").exists()


@pytest.mark.parametrize("args, stdin, message", [
    (["--stack", "dev"], None, "no --outputs given and no pulumi CLI here"),
    (["--stack", "dev", "--outputs", "-"], "{not json", "--outputs stdin: not JSON"),
    (["--stack", "dev", "--outputs", "/nonexistent/outputs.json"], None, "--outputs /nonexistent/outputs.json: cannot read it"),
    (["--stack", "nope", "--outputs", "-"], "{}", "Pulumi.nope.yaml"),
])  # fmt: skip
def test_the_cli_explains_bad_input(args, stdin, message):
    result = _cli(*args, stdin=stdin)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_stack_without_vpn_is_refused(tmp_path):
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    text = (ROOT / "stacks" / "Pulumi.dev.yaml").read_text()
    (stacks / "Pulumi.novpn.yaml").write_text(text.split("  platform:vpn:")[0])
    result = _cli("--stack", "novpn", "--stacks-dir", str(stacks), "--outputs", "-", stdin="{}")
    assert result.returncode == 2 and "stack novpn has no platform:vpn" in result.stderr


def test_render_is_deterministic():
    config = _config("prod", None)
    first = render.onprem_files(render.gateway(config, _outputs(config)))
    assert first == render.onprem_files(render.gateway(config, _outputs(config)))

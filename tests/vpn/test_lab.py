"""The rendered on-prem gateway against an emulated AWS side, in network namespaces (real charons).

Needs root and the Debian packages `make` installs; see lab.py for what the lab changes
(userspace IPsec instead of XFRM) and why.
"""

from __future__ import annotations

import difflib
import subprocess
import time

import pytest

from components.vpn import render
from components.vpn.tunnels import on_prem_dead_peer_seconds
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS
from .lab import VpnLab, _decode, aws_dead_peer_timing, libipsec_variant, wait_for

pytestmark = pytest.mark.usefixtures("vpn_tools")
ESTABLISH_SECONDS = 20


@pytest.fixture
def make_lab(tmp_path):
    labs: list[VpnLab] = []

    def make(stack: str = "dev", **kwargs) -> VpnLab:
        lab = VpnLab(load_stack_config(stack, ROOT), tmp_path / f"lab{len(labs)}", **kwargs)
        labs.append(lab)
        lab.build()
        return lab

    yield make
    for lab in labs:
        lab.teardown()


def _first(names: list[str], mapping: dict[str, str]) -> str:
    return mapping[names[0]]


IKE_NAMES = {"AES256-GCM-16": "AES_GCM_16", "AES128-GCM-16": "AES_GCM_16", "AES256": "AES_CBC", "AES128": "AES_CBC"}
DH_NAMES = {19: "ECP_256", 20: "ECP_384", 21: "ECP_521"}


@pytest.mark.parametrize("stack", STACKS)
def test_both_tunnels_establish_with_the_preferred_proposals_and_carry_traffic(make_lab, stack):
    lab = make_lab(stack)
    lab.start()
    wait_for(lambda: lab.established(lab.onprem) == {1, 2}, ESTABLISH_SECONDS, "both tunnels up on premises")
    wait_for(lambda: lab.established(lab.aws) == {1, 2}, ESTABLISH_SECONDS, "both tunnels up on the AWS side")
    ike = lab.config.vpn.ike
    for tunnel in lab.gateway.tunnels:
        sa = lab.sas(lab.onprem)[tunnel.name]
        # IKEv2, and the first choice of every phase 1 and phase 2 list, as the config orders them.
        assert sa["version"] == "2" and sa["remote-host"] == str(tunnel.aws_outside)
        assert sa["encr-alg"] == _first(ike.phase1_encryption, IKE_NAMES) and sa["encr-keysize"] == "256"
        assert sa["dh-group"] == DH_NAMES[ike.phase1_dh_groups[0]]
        assert sa["local-id"] == str(lab.gateway.public_address) and sa["remote-id"] == str(tunnel.aws_outside)
        [child] = sa["child-sas"].values()
        assert child["protocol"] == "ESP" and child["encap"] == "yes"  # ESP in UDP 4500 (userspace IPsec)
        assert child["encr-alg"] == _first(ike.phase2_encryption, IKE_NAMES)
        assert child["local-ts"] == ["0.0.0.0/0"] and child["remote-ts"] == ["0.0.0.0/0"]  # route-based
        # The first CHILD SA comes with IKE_AUTH (no DH); a rekey runs the PFS group, as AWS's do.
        for _ in lab.onprem.session().rekey({"child": tunnel.name, "timeout": 5000}):
            pass
        wait_for(lambda name=tunnel.name: any(c.get("dh-group") for c in lab.sas(lab.onprem)[name]["child-sas"].values()
                                              if c["state"] == "INSTALLED"), 10, f"{tunnel.name} rekeyed with PFS")  # fmt: skip
        rekeyed = [c for c in lab.sas(lab.onprem)[tunnel.name]["child-sas"].values() if c.get("dh-group")]
        assert rekeyed[0]["dh-group"] == DH_NAMES[ike.phase2_dh_groups[0]]
    lab.start_echo()
    assert lab.echo(5) == 5
    assert lab.packets_out(1) + lab.packets_out(2) >= 5


def test_traffic_moves_to_tunnel_2_when_tunnel_1_is_cut(make_lab):
    lab = make_lab("dev")
    lab.start()
    wait_for(lambda: lab.established(lab.onprem) == {1, 2}, ESTABLISH_SECONDS, "both tunnels up")
    lab.start_echo()
    lab.make_active(1)
    wait_for(lambda: lab.established(lab.onprem) == {1, 2}, ESTABLISH_SECONDS, "tunnel 1 back after re-creating it")
    before = lab.packets_out(1)
    assert lab.echo(5) == 5
    assert lab.packets_out(1) - before >= 5, "tunnel 1 must carry the traffic before it is cut"
    via_tunnel_2 = lab.packets_out(2)

    lab.cut(1)
    cut_at = time.monotonic()
    # Each side drops tunnel 1 once its dead-peer detection gives up; traffic needs both.
    bound = max(on_prem_dead_peer_seconds(lab.config.vpn.on_prem.dpd_delay_seconds),
                lab.config.vpn.ike.dpd_timeout_seconds) + 10  # fmt: skip
    wait_for(lambda: lab.echo(1, timeout=0.3) == 1, bound, "traffic over tunnel 2 after tunnel 1 was cut", interval=0)
    recovered = time.monotonic() - cut_at
    print(f"\ntunnel 1 cut: traffic back over tunnel 2 after {recovered:.1f} s (bound {bound:.0f} s)")
    assert lab.echo(5) == 5
    assert lab.packets_out(2) - via_tunnel_2 >= 5
    assert lab.established(lab.onprem) == {2}
    # The updown hook took tunnel 1's interface down (routes over it withdrawn), tunnel 2's stays up.
    assert not lab.link_up(lab.gateway.tunnels[0].name) and lab.link_up(lab.gateway.tunnels[1].name)


def test_a_phase_1_mismatch_stops_the_tunnels_at_ike(make_lab):
    lab = make_lab("dev")
    assert "AES128-GCM-16" not in lab.config.vpn.ike.phase1_encryption
    lab.start(aws_ike=lab.config.vpn.ike.model_copy(update={"phase1_encryption": ["AES128-GCM-16"]}))
    time.sleep(4)
    assert lab.sas(lab.onprem) == {} and lab.established(lab.aws) == set()
    assert "received proposals unacceptable" in lab.onprem.log() + lab.aws.log()


def test_a_phase_2_mismatch_builds_no_child_sa(make_lab):
    lab = make_lab("dev")
    assert "AES128" not in lab.config.vpn.ike.phase2_encryption
    lab.start(aws_ike=lab.config.vpn.ike.model_copy(update={"phase2_encryption": ["AES128"]}))
    wait_for(lambda: {sa["state"] for sa in lab.sas(lab.onprem).values()} == {"ESTABLISHED"}, ESTABLISH_SECONDS,
             "IKE SAs up (phase 1 matches)")  # fmt: skip
    time.sleep(2)
    assert lab.established(lab.onprem) == set(), "no tunnel may carry traffic without a matching ESP proposal"
    assert all(not sa.get("child-sas") for sa in lab.sas(lab.onprem).values())
    assert "no CHILD_SA built" in lab.onprem.log()


def test_a_wrong_pre_shared_key_does_not_authenticate(make_lab):
    lab = make_lab("dev")
    lab.start(aws_keys=("0" * 32, "1" * 32))
    time.sleep(4)
    assert lab.established(lab.onprem) == set() and lab.established(lab.aws) == set()
    assert "AUTHENTICATION_FAILED" in lab.onprem.log() + lab.aws.log()


def test_the_lab_changes_only_the_xfrm_interface_ids(tmp_path):
    config = load_stack_config("dev", ROOT)
    gw = render.gateway(config, {"vpn": {"tunnels": [{"outsideAddress": "198.51.100.1", "insideCidr": "169.254.10.0/30"},
                                                     {"outsideAddress": "198.51.100.2", "insideCidr": "169.254.10.4/30"}]},
                                 "vpnPreSharedKeys": ["a" * 20, "b" * 20]})  # fmt: skip
    production = render.swanctl_connections(gw)
    changed = [line for line in difflib.ndiff(production.splitlines(), libipsec_variant(production).splitlines())
               if line.startswith(("- ", "+ "))]  # fmt: skip
    assert sorted(line.split()[1] for line in changed) == ["if_id_in", "if_id_in", "if_id_out", "if_id_out",
                                                           "reqid", "reqid"]  # fmt: skip


@pytest.mark.parametrize("stack", STACKS)
def test_charon_loads_the_production_files_unchanged(make_lab, stack):
    """The route-based config as rendered (XFRM interface ids included) is what charon parses."""
    lab = make_lab(stack)
    lab.onprem.directory.mkdir(parents=True)
    files = render.onprem_files(lab.gateway)
    lab._charon(lab.onprem, lab._settings(lab.onprem, None, None))

    def load(text: str) -> subprocess.CompletedProcess[str]:
        conf = lab.onprem.directory / "swanctl.conf"
        conf.write_text(text)
        return subprocess.run(["swanctl", "--load-all", "--file", str(conf), "--uri", f"unix://{lab.onprem.socket}"],
                              capture_output=True, text=True)  # fmt: skip

    broken = load(files[render.CONNECTIONS_FILE].replace("if_id_in = 41", "if_id_in = forty-one") + files[render.SECRETS_FILE])
    assert broken.returncode != 0 and "loading connection 'aws-vpn1' failed" in broken.stderr + broken.stdout
    result = load(files[render.CONNECTIONS_FILE] + files[render.SECRETS_FILE])
    assert result.returncode == 0 and "successfully loaded 2 connections" in result.stdout, result.stdout + result.stderr
    assert result.stdout.count("loaded ike secret") == 2
    ike = lab.config.vpn.ike
    loaded = {name: conn for entry in lab.onprem.session().list_conns() for name, conn in _decode(entry).items()}
    assert sorted(loaded) == sorted(t.name for t in lab.gateway.tunnels)
    for tunnel in lab.gateway.tunnels:
        conn = loaded[tunnel.name]
        assert conn["version"] == "IKEv2" and conn["remote_addrs"] == [str(tunnel.aws_outside)]
        assert conn["local_addrs"] == [str(lab.gateway.local_address)] and conn["local-1"]["id"] == str(lab.gateway.public_address)
        assert int(conn["rekey_time"]) == ike.phase1_lifetime_seconds - ike.rekey_margin_seconds
        assert int(conn["dpd_delay"]) == lab.config.vpn.on_prem.dpd_delay_seconds
        child = conn["children"][tunnel.name]
        assert int(child["rekey_time"]) == ike.phase2_lifetime_seconds - ike.rekey_margin_seconds
        assert (child["dpd_action"], child["close_action"]) == ("start", "start")  # 5.9 shows restart as start
        assert child["local-ts"] == child["remote-ts"] == ["0.0.0.0/0"]


def test_aws_side_timing_declares_the_peer_dead_at_the_configured_timeout():
    for timeout in (30, 45, 60, 120):
        delay, retransmission = aws_dead_peer_timing(timeout)
        assert abs(delay + retransmission.give_up_seconds() - timeout) < 1e-9

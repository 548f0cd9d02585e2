"""Pure pieces of the server: CPU sizing, stop strings, manifests, JWT."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from inference_server.auth import AuthError, JwtVerifier
from inference_server.engine import _stop_cut
from inference_server.loading import cpu_limit, default_torch_threads
from inference_server.manifest import IntegrityError, verify_manifest, write_manifest


def _cgroup_v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def test_cpu_limit_follows_the_cgroup_v2_quota(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert cpu_limit(_cgroup_v2(tmp_path, "200000 100000\n")) == 2
    assert cpu_limit(_cgroup_v2(tmp_path, "150000 100000\n")) == 2  # 1.5 CPUs rounds to 2
    assert cpu_limit(_cgroup_v2(tmp_path, "50000 100000\n")) == 1
    assert cpu_limit(_cgroup_v2(tmp_path, "max 100000\n")) == 64


def test_cpu_limit_reads_cgroup_v1_and_never_exceeds_the_affinity(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("800000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cpu_limit(tmp_path) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cpu_limit(tmp_path) == 3


def test_torch_keeps_one_cpu_free_for_http():
    assert [default_torch_threads(n) for n in (1, 2, 4, 16)] == [1, 1, 3, 15]


def test_stop_cut_finds_the_earliest_stop_and_holds_possible_prefixes():
    assert _stop_cut("hello world", ("wor", "ll")) == (2, 0)
    assert _stop_cut("hello wo", ("world",)) == (None, 2)
    assert _stop_cut("hello", ("xyz",)) == (None, 0)
    assert _stop_cut("abc", ()) == (None, 0)


@given(st.text(alphabet="ab", max_size=12), st.lists(st.text(alphabet="ab", min_size=1, max_size=3), max_size=3))
def test_stop_cut_never_releases_text_a_stop_could_still_claim(text, stops):
    cut, held = _stop_cut(text, tuple(stops))
    if cut is not None:
        assert any(text[cut:].startswith(s) for s in stops)
        assert not any(s in text[: cut + len(s) - 1] for s in stops)  # nothing earlier
    else:
        released = text[: len(text) - held]
        # Whatever more text comes, no stop string can start inside the released part.
        for stop in stops:
            for start in range(len(released)):
                assert not (stop.startswith(text[start:]) or text[start:].startswith(stop)), (start, stop)


def test_manifest_round_trip_and_each_failure_names_the_file(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 100)
    write_manifest(model, "org/model", "abc123")
    assert verify_manifest(model)["revision"] == "abc123"

    (model / "model.safetensors").write_bytes(b"\1" * 100)
    with pytest.raises(IntegrityError, match="model.safetensors: SHA-256 does not match"):
        verify_manifest(model)
    (model / "model.safetensors").write_bytes(b"\0" * 99)
    with pytest.raises(IntegrityError, match=r"model.safetensors: size 99 != 100"):
        verify_manifest(model)
    (model / "model.safetensors").write_bytes(b"\0" * 100)
    (model / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="extra.safetensors: weight file not in the manifest"):
        verify_manifest(model)
    (model / "extra.safetensors").unlink()
    (model / "manifest.json").write_text(json.dumps({"files": [{"path": "config.json"}]}))
    with pytest.raises(IntegrityError, match="unreadable manifest"):
        verify_manifest(model)
    (model / "manifest.json").unlink()
    with pytest.raises(IntegrityError, match="no integrity manifest"):
        verify_manifest(model)


def test_rs256_tokens_verify_with_the_public_key_only():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    verifier = JwtVerifier(key=public_pem, algorithm="RS256", audience="api", issuer="https://idp")
    claims = {"aud": "api", "iss": "https://idp", "exp": int(time.time()) + 60, "sub": "app"}
    good = jwt.encode(claims, private, algorithm="RS256")
    assert verifier.verify(f"Bearer {good}")["sub"] == "app"
    # An HS256 token signed with the *public key* as secret (algorithm confusion) is refused.
    forged = jwt.encode(claims, "an-attacker-chosen-hmac-secret-0123456789", algorithm="HS256")
    with pytest.raises(AuthError, match="invalid token"):
        verifier.verify(f"Bearer {forged}")


def test_verifier_refuses_unknown_algorithms_and_empty_keys():
    with pytest.raises(ValueError, match="unsupported JWT algorithm 'none'"):
        JwtVerifier(key="k", algorithm="none", audience="a", issuer="i")
    with pytest.raises(ValueError, match="a JWT key is required"):
        JwtVerifier(key="", algorithm="HS256", audience="a", issuer="i")

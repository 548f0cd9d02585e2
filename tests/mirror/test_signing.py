"""Signed revision manifests: KMS (moto) and local keys, tampering, and the CLI's --signatures check."""

from __future__ import annotations

import base64
import hashlib
import json

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from moto import mock_aws

from components.mirror.runtime import signing
from components.mirror.runtime.sync import SyncError, sync_revision, verify_signatures

from .conftest import COMMIT_1, REPO
from .test_mirror_cli import run


def _pem_pair() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()  # fmt: skip
    return private, public


MANIFEST = json.dumps({"repo": REPO, "commit": COMMIT_1, "files": [{"path": "model.safetensors", "size": 3,
                                                                   "sha256": "ab" * 32}]}).encode()  # fmt: skip


def test_a_local_signature_verifies_and_every_tampering_is_named():
    private, public = _pem_pair()
    document = signing.sign(MANIFEST, signing.LocalSigner(private))
    signing.verify(MANIFEST, document, public, "r@c")
    with pytest.raises(signing.SignatureError, match="r@c: the manifest changed after signing"):
        signing.verify(MANIFEST.replace(b"ab", b"ac", 1), document, public, "r@c")  # one byte of the manifest
    with pytest.raises(signing.SignatureError, match="unsigned"):
        signing.verify(MANIFEST, None, public, "r@c")
    _, other_public = _pem_pair()
    with pytest.raises(signing.SignatureError, match="does not verify with key .* another key"):
        signing.verify(MANIFEST, document, other_public, "r@c")  # key mismatch
    forged = json.loads(document)
    forged["signature"] = base64.b64encode(signing.LocalSigner(_pem_pair()[0]).sign_digest(
        hashlib.sha256(MANIFEST).digest())).decode()  # fmt: skip
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify(MANIFEST, json.dumps(forged), public, "r@c")  # signature swapped for another key's
    with pytest.raises(signing.SignatureError, match="malformed"):
        signing.verify(MANIFEST, "{not json", public, "r@c")


def test_only_p256_keys_sign():
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()  # fmt: skip
    with pytest.raises(signing.SignatureError, match="P-256"):
        signing.LocalSigner(rsa_pem)


@mock_aws
def test_the_kms_signer_calls_sign_on_the_digest_and_exports_the_public_key():
    """moto accepts the call and its own Verify accepts the signature. moto does not implement
    MessageType=DIGEST (it hashes the digest again: moto/kms/models.py), so verifying a
    KMS signature with the public key is shown with the local signer instead (same ECDSA
    P-256 over the SHA-256 digest, which is what KMS does with DIGEST)."""
    client = boto3.client("kms", region_name="us-east-1")
    key_id = client.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    signer = signing.KmsSigner(key_id, client)
    document = json.loads(signing.sign(MANIFEST, signer))
    assert document["keyId"] == key_id and document["algorithm"] == "ECDSA_SHA_256"
    digest = hashlib.sha256(MANIFEST).digest()
    assert document["manifestSha256"] == digest.hex()
    assert client.verify(KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256",
                         Signature=base64.b64decode(document["signature"]))["SignatureValid"]  # fmt: skip
    assert signer.public_key_pem().startswith("-----BEGIN PUBLIC KEY-----")


def test_sync_signs_before_publishing_names_and_verify_finds_unsigned_and_tampered(upstream, store, aws_env, tmp_path):
    _, upstream_url = upstream
    private, public = _pem_pair()
    sync_revision(store, REPO, "main", upstream=upstream_url, signer=signing.LocalSigner(private))
    assert store.commits(REPO) == [COMMIT_1]  # the signature beside the manifest is not a revision
    assert verify_signatures(store, public) == (1, [])
    (tmp_path / "public.pem").write_text(public)
    ok = run("verify", "--bucket", store.bucket, "--signatures", "--public-key", str(tmp_path / "public.pem"), env=aws_env)
    assert ok.returncode == 0 and "1 revision signatures verified" in ok.stdout

    text = store.manifest_text(REPO, COMMIT_1)
    store._write_text(f"repos/{REPO}/revisions/{COMMIT_1}.json", text.replace('"size": ', '"size": 1', 1))
    checked, damage = verify_signatures(store, public)
    assert checked == 1 and "manifest changed after signing" in damage[0].problem
    store.client.delete_object(Bucket=store.bucket, Key=f"repos/{REPO}/revisions/{COMMIT_1}.json.sig")
    bad = run("verify", "--bucket", store.bucket, "--signatures", "--public-key", str(tmp_path / "public.pem"), env=aws_env)
    assert bad.returncode == 1 and "unsigned" in bad.stdout and COMMIT_1 in bad.stdout


def test_the_cli_refuses_a_bad_signing_key(store, aws_env, tmp_path):
    (tmp_path / "key.pem").write_text("not a key")
    result = run("sync", "--bucket", store.bucket, "--repo", REPO, "--signing-key", f"file:{tmp_path / 'key.pem'}", env=aws_env)
    assert result.returncode == 2 and "--signing-key" in result.stderr
    result = run("sync", "--bucket", store.bucket, "--repo", REPO, "--signing-key", "vault:x", env=aws_env)
    assert result.returncode == 2 and "expected kms:" in result.stderr


def test_only_the_sync_role_may_sign_and_the_account_verifies():
    from components.mirror import policies

    policy = json.loads(policies.signing_key_policy("111122223333", "arn:aws:iam::111122223333:role/sync"))
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["SyncSigns"] == {"Sid": "SyncSigns", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/sync"},
                                   "Action": "kms:Sign", "Resource": "*"}  # fmt: skip
    admin = by_sid["AccountAdministersButCannotSign"]["Action"]
    assert "kms:*" not in admin and not any(a in ("kms:Sign", "kms:*") for a in admin)  # no identity policy can grant Sign
    assert set(by_sid["PlatformVerifies"]["Action"]) == {"kms:Verify", "kms:GetPublicKey", "kms:DescribeKey"}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_each_mirror_signs_with_its_own_kms_key(plans, stack):
    plan = plans[stack]
    [key] = [r for r in plan.of_type("aws:kms/key:Key") if r.name == "mirror-signing"]
    assert (key.inputs["keyUsage"], key.inputs["customerMasterKeySpec"]) == ("SIGN_VERIFY", "ECC_NIST_P256")
    [role] = [r for r in plan.of_type("aws:iam/role:Role") if r.name == "mirror-sync"]
    assert role.urn in key.dependencies["policy"]  # the key policy names the sync role
    [sign] = [r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "mirror-sync-sign"]
    assert key.urn in sign.dependencies["policy"]
    [job] = [r for r in plan.of_type("kubernetes:batch/v1:CronJob") if r.name == "mirror-sync"]
    env = {e["name"]: e.get("value") for e in job.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MIRROR_SIGNING_KEY" in env and key.urn in job.dependencies["spec"]
    assert "modelMirrorSigningKeyArn" in plan.stack_outputs


def test_the_private_cloud_mirror_signs_with_the_key_from_the_pulumi_secret(project):
    import dataclasses

    import kubernetes_validate

    from components.mirror import policies
    from platformctl.offline import run_offline_plan
    from tests.conftest import ROOT

    plan = run_offline_plan(dataclasses.replace(project, stack_config_dir=ROOT / "examples" / "stacks"), "hybrid")
    secret = plan.named("mirror-onprem-signing-key")
    # the private key never appears in the plan (or in state unencrypted): the whole value is secret
    assert secret.inputs["metadata"]["name"] == policies.ONPREM_SIGNING_SECRET and secret.inputs["stringData"] == "[secret]"
    job = plan.named("mirror-onprem-mirror-sync-cronjob").inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in job["containers"][0]["env"]}
    assert env["MIRROR_SIGNING_KEY"] == f"file:{policies.SIGNING_KEY_PATH}/key.pem"
    assert env["PLATFORM_AUDIT_SUBJECT"] == f"system:serviceaccount:{policies.NAMESPACE}:default"  # its publishes are audited
    assert {"name": "signing-key", "secret": {"secretName": policies.ONPREM_SIGNING_SECRET, "defaultMode": 0o400}} in job["volumes"]
    manifest = {"apiVersion": "batch/v1", "kind": "CronJob", **plan.named("mirror-onprem-mirror-sync-cronjob").inputs}
    manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "registry/mirror@sha256:" + "0" * 64
    kubernetes_validate.validate(manifest, "1.32.0", strict=True)


def test_an_onprem_mirror_without_a_signing_key_is_refused(project):
    import dataclasses

    from components.config import ConfigError, parse_config
    from platformctl.project import read_stack_config
    from tests.conftest import ROOT

    raw, secret_keys = read_stack_config(dataclasses.replace(project, stack_config_dir=ROOT / "examples" / "stacks"), "hybrid")
    del raw["platform:mirrorSigningKey"]
    with pytest.raises(ConfigError, match=r"platform:mirrorSigningKey = null: is required \(a secret\) with mirror.privateCloud"):
        parse_config(raw, secret_keys - {"platform:mirrorSigningKey"}, "examples/stacks/Pulumi.hybrid.yaml")


def test_each_publish_is_audited_once_with_who_what_and_whether_it_was_signed(upstream, store, aws_env, monkeypatch):
    hub, upstream_url = upstream
    monkeypatch.setenv("PLATFORM_AUDIT_SUBJECT", "system:serviceaccount:model-mirror:mirror-sync")
    events: list[dict] = []
    private, _ = _pem_pair()
    sync_revision(store, REPO, "main", upstream=upstream_url, signer=signing.LocalSigner(private), audit=events.append)
    [event] = events
    assert (event["audit"], event["event"], event["subject"]) == ("v1", "mirror.publish",
                                                                  "system:serviceaccount:model-mirror:mirror-sync")  # fmt: skip
    assert (event["resource"], event["commit"], event["refs"], event["signed"]) == (f"{REPO}@{COMMIT_1}", COMMIT_1, ["main"], True)
    assert (event["files"], event["bytes"]) == (len(hub.files), sum(len(body) for body in hub.files.values()))
    sync_revision(store, REPO, COMMIT_1, upstream=upstream_url, audit=events.append)  # by commit, unsigned
    assert (events[1]["refs"], events[1]["signed"]) == ([], False)


def test_a_failed_sync_publishes_nothing_and_audits_nothing(store, aws_env):
    events: list[dict] = []
    with pytest.raises(SyncError):
        sync_revision(store, REPO, "main", upstream="http://127.0.0.1:9", audit=events.append)
    assert events == []


def test_the_sync_pods_name_their_service_account_as_the_audit_subject():
    from components.mirror import policies
    from platformctl.common import load_stack_config
    from tests.conftest import ROOT

    config = load_stack_config("prod", ROOT).mirror  # a stack with a mirror
    eks = policies.sync_cronjob(config, "image", "bucket", upstream="https://huggingface.co")
    [container] = eks["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "PLATFORM_AUDIT_SUBJECT", "value": "system:serviceaccount:model-mirror:mirror-sync"} in container["env"]

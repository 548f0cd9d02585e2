"""Tiered storage in every stack's offline plan: Pulumi receives exactly the structures S3 and Firehose took."""

from __future__ import annotations


import pytest
from components.storage import firehose, lifecycle
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS


def _wire(value):
    """An S3/Firehose API structure as the engine's wire names (camelCase, ``ID`` → ``id``)."""
    if isinstance(value, dict):
        return {("id" if k == "ID" else k[0].lower() + k[1:]): _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _wire_snake(value):
    """pulumi-aws argument names (snake_case) as the engine's wire names (camelCase)."""
    if isinstance(value, dict):
        return {k.split("_")[0] + "".join(w.title() for w in k.split("_")[1:]): _wire_snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire_snake(v) for v in value]
    return value


def _storage(plan, type_token):
    return {r.name: r for r in plan.of_type(type_token) if r.name.startswith("storage-")}


@pytest.mark.parametrize("stack", STACKS)
def test_each_class_bucket_is_encrypted_private_logged_and_tiered(plans, stack):
    plan, config = plans[stack], load_stack_config(stack, ROOT).storage
    buckets = _storage(plan, "aws:s3/bucket:Bucket")
    assert set(buckets) == {f"storage-{c}" for c in config.classes} | {"storage-access-logs"}
    encryption = _storage(plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    lifecycles = _storage(plan, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    policies = _storage(plan, "aws:s3/bucketPolicy:BucketPolicy")
    logging = _storage(plan, "aws:s3/bucketLogging:BucketLogging")
    locks = _storage(plan, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
    blocks = _storage(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    for data_class, settings in config.classes.items():
        name = f"storage-{data_class}"
        [rule] = encryption[name].inputs["rules"]
        assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms" and rule["bucketKeyEnabled"] is True
        assert encryption[name].dependencies["rules"][0].endswith("Key::storage-data")
        assert all(blocks[name].inputs[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                                             "restrictPublicBuckets"))  # fmt: skip
        expected = lifecycle.lifecycle_rules(settings.transitions(), settings.expire_days, settings.noncurrent_expire_days)
        assert lifecycles[name].inputs["rules"] == _wire(expected)  # the structure S3 took on moto
        assert logging[name].inputs["targetPrefix"] == f"{data_class}/"
        assert logging[name].dependencies["targetBucket"][0].endswith("Bucket::storage-access-logs")
        assert policies[name].dependencies["policy"][0].endswith(f"Bucket::{name}")
        assert (name in locks) == (settings.object_lock_days is not None)
        assert buckets[name].inputs.get("objectLockEnabled", False) is (settings.object_lock_days is not None)
        if name in locks:
            assert locks[name].inputs == {**_wire(lifecycle.object_lock_configuration(settings.object_lock_days)),
                                          "bucket": "[unknown]"}  # fmt: skip
    # Access logs: SSE-S3 (S3 server access logging can't write SSE-KMS), expiring.
    [rule] = encryption["storage-access-logs"].inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    assert lifecycles["storage-access-logs"].inputs["rules"][0]["expiration"] == {"days": config.access_log_retention_days}
    [key] = _storage(plan, "aws:kms/key:Key").values()
    assert key.inputs["enableKeyRotation"] is True


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("layout, stream_name, role_name", [(firehose.LOGS, "storage-logs", "storage-firehose"),
                                                            (firehose.AUDIT, "storage-audit-stream", "storage-audit-firehose")])
def test_each_stream_delivers_into_its_bucket_as_configured(plans, stack, layout, stream_name, role_name):
    plan, config = plans[stack], load_stack_config(stack, ROOT).storage
    streams = _storage(plan, "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream")
    assert set(streams) == {"storage-logs", "storage-audit-stream"}
    stream = streams[stream_name]
    assert stream.inputs["name"] == f"platform-{stack}-{layout.suffix}"
    assert stream.inputs["destination"] == "extended_s3"
    assert stream.inputs["serverSideEncryption"]["enabled"] is True
    assert stream.inputs["serverSideEncryption"]["keyType"] == "CUSTOMER_MANAGED_CMK"
    destination = stream.inputs["extendedS3Configuration"]
    # The structure moto's Firehose took; only the ARNs are unknown offline.
    expected = firehose.to_pulumi_destination(firehose.destination(
        role_arn="[unknown]", bucket_arn="[unknown]", kms_key_arn="[unknown]", log_group="/aws/kinesisfirehose/"
        f"platform-{stack}-{layout.suffix}", buffering_size_mb=config.firehose.buffering_size_mb,
        buffering_interval_seconds=config.firehose.buffering_interval_seconds, layout=layout))  # fmt: skip
    assert destination == _wire_snake(expected)
    deps = stream.dependencies["extendedS3Configuration"]
    assert any(urn.endswith(f"Bucket::storage-{layout.data_class}") for urn in deps)
    assert any(urn.endswith("Key::storage-data") for urn in deps)
    assert any(urn.endswith(f"RolePolicy::{role_name}") for urn in stream.depends_on)
    [policy] = [r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == role_name]
    assert any(urn.endswith(f"Bucket::storage-{layout.data_class}") for urn in policy.dependencies["policy"])


@pytest.mark.parametrize("stack", STACKS)
def test_the_audit_table_reads_the_audit_bucket_and_the_workgroup_saves_the_queries(plans, stack):
    from components.storage import audit

    plan = plans[stack]
    bucket = f"platform-{stack}-audit"
    [database] = _storage(plan, "aws:glue/catalogDatabase:CatalogDatabase").values()
    [table] = _storage(plan, "aws:glue/catalogTable:CatalogTable").values()
    assert database.inputs["name"] == f"platform_{stack}_audit"
    assert table.dependencies["databaseName"][0].endswith("CatalogDatabase::storage-audit")
    assert {k: v for k, v in table.inputs.items() if k != "databaseName"} == _wire_snake(
        audit.to_pulumi_table(audit.table_input(bucket)))
    [workgroup] = _storage(plan, "aws:athena/workgroup:Workgroup").values()
    settings = workgroup.inputs["configuration"]
    assert settings["enforceWorkgroupConfiguration"] is True
    assert settings["resultConfiguration"]["outputLocation"] == f"s3://platform-{stack}-logs/athena-results/"
    assert settings["resultConfiguration"]["encryptionConfiguration"]["encryptionOption"] == "SSE_KMS"
    scan_limit = load_stack_config(stack, ROOT).storage.audit_query_scan_limit_gb
    assert settings["bytesScannedCutoffPerQuery"] == scan_limit * 1024**3
    queries = {q.inputs["name"]: q for q in _storage(plan, "aws:athena/namedQuery:NamedQuery").values()}
    assert {name: q.inputs["query"] for name, q in queries.items()} == {n: sql for n, (_, sql) in audit.QUERIES.items()}
    assert all(q.dependencies["workgroup"][0].endswith("Workgroup::storage-audit") for q in queries.values())


def test_the_pulumi_destination_is_the_api_destination_renamed():
    api = firehose.destination(role_arn="r", bucket_arn="b", kms_key_arn="k", log_group="g", buffering_size_mb=64,
                               buffering_interval_seconds=300)  # fmt: skip
    converted = firehose.to_pulumi_destination(api)
    assert (converted["prefix"], converted["error_output_prefix"], converted["compression_format"]) == (
        api["Prefix"], api["ErrorOutputPrefix"], api["CompressionFormat"])
    assert (converted["buffering_size"], converted["buffering_interval"], converted["kms_key_arn"]) == (64, 300, "k")
    assert converted["dynamic_partitioning_configuration"] == {"enabled": True, "retry_duration": firehose.PARTITIONING_RETRY_SECONDS}
    [extract, delimiter] = converted["processing_configuration"]["processors"]
    assert extract["parameters"][0] == {"parameter_name": "MetadataExtractionQuery", "parameter_value": firehose.METADATA_QUERY}
    assert delimiter["type"] == "AppendDelimiterToRecord"


@pytest.mark.parametrize("stack", STACKS)
def test_fluent_bit_runs_everywhere_with_its_own_role(plans, stack):
    plan, config = plans[stack], load_stack_config(stack, ROOT).storage
    k8s = {r.type.rsplit(":", 1)[1]: r for r in plan.resources if r.name.startswith("storage-shipper-")}
    assert set(k8s) == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
    assert all(r.provider and "pulumi:providers:kubernetes" in r.provider for r in k8s.values())
    pod = k8s["DaemonSet"].inputs["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["containers"][0]["image"] == config.shipping.image
    assert k8s["ServiceAccount"].dependencies["metadata"][0].endswith("Role::storage-shipper")
    [policy] = [r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "storage-shipper"]
    assert sorted(urn.rsplit("::", 1)[1] for urn in policy.dependencies["policy"]) == ["storage-audit-stream", "storage-logs"]


@pytest.mark.parametrize("stack", STACKS)
def test_gpu_nodes_carry_the_hot_tier(plans, stack):
    """The launch templates' disks; the user data (nodeadm's localStorage, kubelet log rotation)
    waits for the cluster endpoint, unknown offline, and is tested as a pure function."""
    plan, config = plans[stack], load_stack_config(stack, ROOT)
    hot = config.storage.hot
    templates = [r for r in plan.of_type("aws:ec2/launchTemplate:LaunchTemplate") if r.name.startswith("gpu-")]
    assert templates
    for template in templates:
        disks = template.inputs["blockDeviceMappings"]
        assert template.inputs["description"].endswith(f"{hot.source} hot tier")
        if hot.source == "instanceStore":
            assert len(disks) == 1  # the root volume only: the hot tier is the instance's NVMe
        else:
            assert disks[1]["ebs"] == {"volumeSize": hot.size_gib, "volumeType": "gp3", "throughput": hot.throughput_mibps,
                                       "iops": hot.iops, "encrypted": "true", "deleteOnTermination": "true"}  # fmt: skip


def test_the_private_clouds_audit_events_ship_to_the_audit_stream_only(project, tmp_path):
    """The hybrid example: Fluent Bit in the private cloud with an IAM user's key that may only
    put into the audit stream, shipping audit events and nothing else."""
    import dataclasses

    import kubernetes_validate

    from components.storage import audit, shipping
    from platformctl.offline import run_offline_plan

    from .test_tiers import route

    plan = run_offline_plan(dataclasses.replace(project, stack_config_dir=ROOT / "examples" / "stacks"), "hybrid")
    onprem = {r.name: r for r in plan.resources if r.name.startswith("storage-onprem-audit")}
    [provider] = [r for r in plan.resources if r.type == "pulumi:providers:kubernetes" and r.name == "private-cloud"]
    k8s = {r.type.rsplit(":", 1)[1]: r for r in onprem.values() if r.type.startswith("kubernetes:")}
    assert set(k8s) == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret", "ConfigMap", "DaemonSet"}
    assert all(r.provider.startswith(provider.urn) for r in k8s.values())
    policy = next(r for r in onprem.values() if r.type == "aws:iam/userPolicy:UserPolicy")
    # Built from the audit stream's ARN alone (unknown offline): firehose.shipper_policy, checked on moto's IAM.
    assert [urn.rsplit("::", 1)[1] for urn in policy.dependencies["policy"]] == ["storage-audit-stream"]
    secret = k8s["Secret"].inputs
    assert secret["metadata"]["name"] == shipping.AUDIT_CREDENTIALS_SECRET and secret["stringData"] == "[secret]"
    pod = k8s["DaemonSet"].inputs["spec"]["template"]["spec"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["containers"][0]["env"]}
    assert env == {key: {"name": shipping.AUDIT_CREDENTIALS_SECRET, "key": key}
                   for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}  # fmt: skip
    assert "annotations" not in k8s["ServiceAccount"].inputs["metadata"]  # no IRSA outside EKS
    for kind in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"):
        api = {"Namespace": "v1", "ServiceAccount": "v1", "DaemonSet": "apps/v1"}.get(kind, "rbac.authorization.k8s.io/v1")
        kubernetes_validate.validate({"apiVersion": api, "kind": kind, **k8s[kind].inputs}, "1.33.0", strict=True)
    # Its Fluent Bit config ships audit events to the audit stream, and drops everything else.
    config = shipping.fluent_bit_config(region="us-east-1", stream_name=None, audit_stream_name="platform-hybrid-audit",
                                        sizing=shipping.hot_sizing(load_stack_config("dev", ROOT).storage.hot,
                                                                   load_stack_config("dev", ROOT).storage.shipping))  # fmt: skip
    tag = "kube.var.log.containers.qwen-7b-0_inference_server-abc.log"
    assert route(config, tag, {"audit": audit.SCHEMA, "event": "inference.request"}) == ["platform-hybrid-audit"]
    assert route(config, tag, {"message": "request"}) == []


def test_without_a_private_cloud_or_with_its_audit_off_nothing_ships_from_there(plans):
    assert not [r for plan in plans.values() for r in plan.resources if r.name.startswith("storage-onprem-audit")]

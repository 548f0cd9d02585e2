"""The cold tier's S3 documents and the ingest stream, applied to S3 and Firehose on moto with boto3.

The structures under test are the ones the component hands to Pulumi (one source); the
plan tests check that Pulumi receives exactly them.
"""

from __future__ import annotations

import gzip
import json

import boto3
import pytest
from moto import mock_aws

from components.storage import firehose, lifecycle
from platformctl.common import load_stack_config

from ..conftest import ROOT, STACKS
from .firehose_semantics import evaluate_prefix, firehose_semantics, utc_now  # noqa: F401
from datetime import UTC

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
CLASSES = [(stack, name) for stack in STACKS for name in load_stack_config(stack, ROOT).storage.classes]


@pytest.fixture
def aws():
    with mock_aws():
        yield {name: boto3.client(name, region_name=REGION) for name in ("s3", "firehose", "iam", "kms")}


@pytest.mark.parametrize("stack, data_class", CLASSES)
def test_each_class_lifecycle_policy_and_lock_apply_to_s3_and_read_back(aws, stack, data_class):
    settings = load_stack_config(stack, ROOT).storage.classes[data_class]
    s3, bucket = aws["s3"], f"platform-{stack}-{data_class}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=settings.object_lock_days is not None)
    rules = lifecycle.lifecycle_rules(settings.transitions(), settings.expire_days, settings.noncurrent_expire_days)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules
    if settings.object_lock_days is not None:
        lock = lifecycle.object_lock_configuration(settings.object_lock_days)
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=lock)
        stored = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        if stored["Rule"]["DefaultRetention"].get("Years") == 0:  # moto reports the unset Years as 0
            del stored["Rule"]["DefaultRetention"]["Years"]
        assert stored == lock
        # Governance retention in force: a locked version can't be deleted without the bypass.
        version = s3.put_object(Bucket=bucket, Key="audit/1.json", Body=b"{}")["VersionId"]
        with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=bucket, Key="audit/1.json", VersionId=version)
    policy = lifecycle.tls_only_policy(f"arn:aws:s3:::{bucket}")
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]) == policy
    # moto evaluates bucket policies and counts its in-process requests as plain HTTP
    # (aws:SecureTransport false): the TLS-only policy now refuses them.
    with pytest.raises(s3.exceptions.ClientError, match="Forbidden|AccessDenied"):
        s3.put_object(Bucket=bucket, Key="late.json", Body=b"{}")


def test_object_lock_cannot_be_configured_on_a_bucket_created_without_it(aws):
    """Why the component enables Object Lock at creation: S3 refuses it afterwards (here, moto's S3)."""
    aws["s3"].create_bucket(Bucket="no-lock")
    with pytest.raises(aws["s3"].exceptions.ClientError):
        aws["s3"].put_object_lock_configuration(Bucket="no-lock", ObjectLockConfiguration=lifecycle.object_lock_configuration(30))


def test_access_log_bucket_admits_s3_logging_for_our_buckets_only(aws):
    sources = [f"arn:aws:s3:::platform-dev-{c}" for c in ("logs", "audit")]
    policy = lifecycle.access_log_bucket_policy("arn:aws:s3:::platform-dev-access-logs", ACCOUNT, sources)
    aws["s3"].create_bucket(Bucket="platform-dev-access-logs")
    aws["s3"].put_bucket_policy(Bucket="platform-dev-access-logs", Policy=json.dumps(policy))
    [tls, logging] = json.loads(aws["s3"].get_bucket_policy(Bucket="platform-dev-access-logs")["Policy"])["Statement"]
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert logging["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert logging["Condition"]["ArnLike"]["aws:SourceArn"] == sources


def _stream(aws, stack: str) -> tuple[str, str]:
    config = load_stack_config(stack, ROOT).storage.firehose
    bucket, name = f"platform-{stack}-logs", f"platform-{stack}-logs"
    aws["s3"].create_bucket(Bucket=bucket)
    key = aws["kms"].create_key()["KeyMetadata"]["Arn"]
    role = aws["iam"].create_role(RoleName="firehose", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    destination = firehose.destination(role_arn=role, bucket_arn=f"arn:aws:s3:::{bucket}", kms_key_arn=key,
                                       log_group=f"/aws/kinesisfirehose/{name}", buffering_size_mb=config.buffering_size_mb,
                                       buffering_interval_seconds=config.buffering_interval_seconds)  # fmt: skip
    aws["firehose"].create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                                           ExtendedS3DestinationConfiguration=destination,
                                           DeliveryStreamEncryptionConfigurationInput=firehose.encryption(key))  # fmt: skip
    described = aws["firehose"].describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    [dest] = described["Destinations"]
    stored = dest["ExtendedS3DestinationDescription"]
    for field in ("Prefix", "ErrorOutputPrefix", "CompressionFormat", "BufferingHints", "ProcessingConfiguration",
                  "DynamicPartitioningConfiguration", "EncryptionConfiguration"):  # fmt: skip
        assert stored[field] == destination[field], field
    return bucket, name


def _fluent_bit_record(component: str | None, message: str) -> bytes:
    record = {"time": "2026-11-22T06:00:00.000Z", "stream": "stdout", "log": message,
              "kubernetes": {"namespace_name": "inference", "pod_name": "demo-0"}}  # fmt: skip
    if component is not None:
        record["component"] = component
    return json.dumps(record).encode()


@pytest.mark.parametrize("stack", STACKS)
def test_records_land_gzipped_under_their_component_and_date(aws, firehose_semantics, stack):  # noqa: F811
    bucket, name = _stream(aws, stack)
    batch = [_fluent_bit_record("inference-server", f"request {i}") for i in range(5)]
    batch += [_fluent_bit_record("model-mirror", "sync done"), _fluent_bit_record(None, "no component")]
    response = aws["firehose"].put_record_batch(DeliveryStreamName=name, Records=[{"Data": d} for d in batch])
    assert response["FailedPutCount"] == 0
    now = utc_now()
    objects = {o["Key"]: o for o in aws["s3"].list_objects_v2(Bucket=bucket)["Contents"]}
    day = f"year={now:%Y}/month={now:%m}/day={now:%d}/"
    expected = {f"logs/component=inference-server/{day}": batch[:5], f"logs/component=model-mirror/{day}": batch[5:6],
                f"errors/partitioning-failed/{day}": batch[6:]}  # fmt: skip
    assert sorted(key.rsplit("/", 1)[0] + "/" for key in objects) == sorted(expected)
    for key in objects:
        assert key.endswith(".gz") and key.rsplit("/", 1)[1].startswith(f"{name}-")
        body = gzip.decompress(aws["s3"].get_object(Bucket=bucket, Key=key)["Body"].read())
        assert body.split(b"\n")[:-1] == expected[key.rsplit("/", 1)[0] + "/"]  # one JSON object per line


def test_the_prefixes_are_what_firehose_evaluates():
    from datetime import datetime

    when = datetime(2026, 2, 3, 4, 5, tzinfo=UTC)
    assert evaluate_prefix(firehose.PREFIX, when, {"component": "api"}) == "logs/component=api/year=2026/month=02/day=03/"
    assert evaluate_prefix(firehose.ERROR_PREFIX, when, None, "partitioning-failed") == (
        "errors/partitioning-failed/year=2026/month=02/day=03/")
    assert evaluate_prefix("static/", when, None) == "static/2026/02/03/04/"
    with pytest.raises(KeyError):
        evaluate_prefix(firehose.PREFIX, when, {})

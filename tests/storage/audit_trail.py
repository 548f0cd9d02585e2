"""The audit trail on moto, shared by the storage and server tests: the audit stream into an
Object-Locked bucket (with :mod:`.firehose_semantics`), what lands there, and the Glue table
over it as DuckDB reads it.

DuckDB stands in for Athena: it reads the delivered objects with the table's own column
types and Hive partitions, lower-casing JSON keys as the table's SerDe does
(``case.insensitive``). Athena's dialect and its partition projection are only exercised
by a deployment; the projection's template is checked against the landed keys instead.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

from components.storage import audit, firehose, lifecycle

LOCK_DAYS = 365
HIVE_TO_DUCKDB = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN"}


def create_audit_stream(aws: dict[str, Any], environment: str = "dev") -> tuple[str, str]:
    """The audit bucket (Object Lock, default retention) and the audit stream, as the component declares them."""
    bucket, name = f"platform-{environment}-audit", f"platform-{environment}-{firehose.AUDIT.suffix}"
    aws["s3"].create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    aws["s3"].put_object_lock_configuration(Bucket=bucket,
                                            ObjectLockConfiguration=lifecycle.object_lock_configuration(LOCK_DAYS))  # fmt: skip
    key = aws["kms"].create_key()["KeyMetadata"]["Arn"]
    role = aws["iam"].create_role(RoleName="audit-firehose", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    destination = firehose.destination(role_arn=role, bucket_arn=f"arn:aws:s3:::{bucket}", kms_key_arn=key,
                                       log_group=f"/aws/kinesisfirehose/{name}", buffering_size_mb=64,
                                       buffering_interval_seconds=300, layout=firehose.AUDIT)  # fmt: skip
    aws["firehose"].create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                                           ExtendedS3DestinationConfiguration=destination,
                                           DeliveryStreamEncryptionConfigurationInput=firehose.encryption(key))  # fmt: skip
    return bucket, name


def shipped(line: dict[str, Any], pod: str = "qwen-7b-0", namespace: str = "inference") -> bytes:
    """A JSON log line as Fluent Bit ships it: the kubernetes filter (Merge_Log On, Keep_Log Off)
    puts the line's keys at the top and adds the pod's metadata; the lua filter adds ``component``."""
    record = {"stream": "stderr", **line, "kubernetes": {"namespace_name": namespace, "pod_name": pod,
                                                        "container_name": "server", "labels": {"app": pod}}}  # fmt: skip
    record["component"] = pod
    return json.dumps(record).encode()


def landed(s3, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """Each delivered object's key → its events."""
    found: dict[str, list[dict[str, Any]]] = {}
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        found[item["Key"]] = [json.loads(line) for line in body.decode().splitlines()]
    return found


def partition_of(key: str) -> dict[str, str]:
    """The Hive partition values in a delivered key."""
    return dict(re.findall(r"([a-z]+)=([^/]+)/", key))


def duckdb_type(hive: str) -> str:
    if hive in HIVE_TO_DUCKDB:
        return HIVE_TO_DUCKDB[hive]
    if match := re.fullmatch(r"array<(\w+)>", hive):
        return f"{duckdb_type(match.group(1))}[]"
    if match := re.fullmatch(r"struct<(.+)>", hive):
        fields = [part.split(":", 1) for part in match.group(1).split(",")]
        return "STRUCT(" + ", ".join(f"{name} {duckdb_type(kind)}" for name, kind in fields) + ")"
    raise ValueError(f"no DuckDB type for Hive type {hive!r}")


def athena_table(objects: dict[str, list[dict[str, Any]]], root: Path):
    """A DuckDB connection with ``audit_events`` over the delivered objects, typed as the Glue table."""
    import duckdb

    for key, events in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({k.lower(): v for k, v in event.items()}) for event in events]
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    columns = {name: duckdb_type(kind) for name, kind, _ in audit.COLUMNS}
    partitions = {name: duckdb_type(kind) for name, kind, _ in audit.PARTITION_KEYS}
    depth = "/".join("*" for _ in audit.PARTITION_KEYS)
    connection = duckdb.connect()
    pattern = f"{root}/events/{depth}/*.gz"
    assert "'" not in pattern
    connection.execute(
        f"CREATE VIEW {audit.TABLE} AS SELECT * FROM read_json('{pattern}', format='newline_delimited', "
        f"hive_partitioning=true, hive_types={partitions!r}, columns={columns!r})")  # fmt: skip
    return connection

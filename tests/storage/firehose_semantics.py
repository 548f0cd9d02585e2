"""What moto's Firehose leaves out, added for the tests: dynamic partitioning and GZIP.

moto delivers every batch, uncompressed, to ``<Prefix>/YYYY/MM/DD/HH/`` and ignores the
stream's processing configuration. Firehose itself (Amazon Data Firehose developer guide,
"Dynamic partitioning" and "Custom prefixes for Amazon S3 objects"):

- runs the ``MetadataExtraction`` processor's JQ query on each record (here: the ``jq``
  library, the stream's own query) and evaluates ``!{partitionKeyFromQuery:KEY}`` and
  ``!{timestamp:FORMAT}`` (UTC arrival time, Java date format) in ``Prefix``, with no
  ``YYYY/MM/DD/HH/`` added when the prefix has expressions;
- appends the ``AppendDelimiterToRecord`` processor's delimiter to each record;
- delivers records whose keys can't be extracted under ``ErrorOutputPrefix``, whose
  ``!{firehose:error-output-type}`` this emulation names ``partitioning-failed``;
- compresses each object as ``CompressionFormat`` says (GZIP: a ``.gz`` object).

And what S3 does to any new object (moto applies it in its HTTP layer, which this backend
call skips): a bucket with a default Object Lock retention locks each object it receives.

Only the pieces our stream uses are emulated; anything else raises, so a stream that
relies on more cannot pass silently.
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
from collections import defaultdict
from datetime import datetime, UTC
from typing import Any

import jq
import pytest
from moto.core.utils import utcnow
from moto.firehose.models import FirehoseBackend
from moto.moto_api._internal import mock_random
from moto.s3.models import s3_backends

# Java DateTimeFormatter letters our prefixes use → strftime.
JAVA_DATE = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H"}
EXPRESSION = re.compile(r"!\{([a-zA-Z]+):([^}]+)\}")


class UnsupportedByEmulation(NotImplementedError):
    pass


def _timestamp(pattern: str, now: datetime) -> str:
    if pattern not in JAVA_DATE:
        raise UnsupportedByEmulation(f"timestamp format {pattern!r}")
    return now.strftime(JAVA_DATE[pattern])


def evaluate_prefix(prefix: str, now: datetime, keys: dict[str, str] | None, error_type: str | None = None) -> str:
    """A Firehose S3 prefix with its ``!{namespace:value}`` expressions evaluated."""

    def replace(match: re.Match[str]) -> str:
        namespace, value = match.groups()
        if namespace == "timestamp":
            return _timestamp(value, now)
        if namespace == "partitionKeyFromQuery":
            if keys is None or value not in keys:
                raise KeyError(value)
            return keys[value]
        if namespace == "firehose" and value == "error-output-type" and error_type:
            return error_type
        raise UnsupportedByEmulation(f"prefix expression !{{{namespace}:{value}}}")

    if not EXPRESSION.search(prefix):
        # A static prefix gets Firehose's default time path.
        return f"{prefix}{now.strftime('%Y/%m/%d/%H')}/"
    return EXPRESSION.sub(replace, prefix)


def _processors(destination: dict[str, Any]) -> dict[str, dict[str, str]]:
    config = destination.get("ProcessingConfiguration") or {}
    if not config.get("Enabled"):
        return {}
    processors = {}
    for processor in config.get("Processors", []):
        params = {p["ParameterName"]: p["ParameterValue"] for p in processor.get("Parameters", [])}
        if processor["Type"] not in ("MetadataExtraction", "AppendDelimiterToRecord"):
            raise UnsupportedByEmulation(f"processor {processor['Type']}")
        processors[processor["Type"]] = params
    return processors


def _partition_keys(query: str, data: bytes) -> dict[str, str] | None:
    try:
        result = jq.compile(query).input_value(json.loads(data)).first()
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(result, dict) or any(not isinstance(v, str) or not v for v in result.values()):
        return None
    return result


def put_s3_records(self: FirehoseBackend, delivery_stream_name: str, version_id: str,
                   s3_destination: dict[str, Any], records: list[dict[str, bytes]]) -> list[dict[str, str]]:  # fmt: skip
    bucket_name = s3_destination["BucketARN"].split(":")[-1]
    processors = _processors(s3_destination)
    partitioned = (s3_destination.get("DynamicPartitioningConfiguration") or {}).get("Enabled", False)
    delimiter = codecs.decode(processors.get("AppendDelimiterToRecord", {}).get("Delimiter", ""), "unicode_escape").encode()
    now = utcnow().replace(tzinfo=UTC)
    objects: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        keys = None
        if partitioned:
            query = processors.get("MetadataExtraction", {}).get("MetadataExtractionQuery")
            if query is None:
                raise UnsupportedByEmulation("dynamic partitioning without a MetadataExtraction query")
            keys = _partition_keys(query, record["Data"])
        try:
            prefix = evaluate_prefix(s3_destination.get("Prefix", ""), now, keys)
        except KeyError:
            prefix = evaluate_prefix(s3_destination["ErrorOutputPrefix"], now, None, "partitioning-failed")
        objects[prefix].append(record["Data"] + delimiter)
    compression = s3_destination.get("CompressionFormat", "UNCOMPRESSED")
    if compression not in ("GZIP", "UNCOMPRESSED"):
        raise UnsupportedByEmulation(f"compression {compression}")
    for prefix, parts in objects.items():
        body = b"".join(parts)
        name = f"{delivery_stream_name}-{version_id}-{now.strftime('%Y-%m-%d-%H-%M-%S')}-{mock_random.uuid4()}"
        if compression == "GZIP":
            body, name = gzip.compress(body), name + ".gz"
        s3 = s3_backends[self.account_id][self.partition]
        bucket = s3.get_bucket(bucket_name)
        lock = {"lock_mode": bucket.default_lock_mode, "lock_until": bucket.default_retention()} if bucket.has_default_lock else {}
        s3.put_object(bucket_name, prefix + name, body, **lock)
    return [{"RecordId": str(mock_random.uuid4())} for _ in records]


@pytest.fixture
def firehose_semantics(monkeypatch):
    monkeypatch.setattr(FirehoseBackend, "put_s3_records", put_s3_records)
    yield


def utc_now() -> datetime:
    return datetime.now(UTC)

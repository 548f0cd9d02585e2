"""Audit events: how they are recognised, where they land, and the Athena table over them (pure).

Three sources write audit events, each one JSON object with ``"audit": "v1"``:

- ``inference.request``: the inference server, one per ``/v1`` request (stdout);
- ``mirror.publish``: the mirror sync, one per revision it publishes (stdout);
- ``failover.transition``: the failover agent, one per keepalived state change (straight
  into the audit stream: the pair's nodes run outside Kubernetes).

Fluent Bit moves every record whose ``audit`` key matches :data:`ROUTING_REGEX` to the audit
stream, and out of the logs stream. The marker is a string on purpose: Fluent Bit's rule
regexes only ever match string values (``flb_ra_key_regex_match``), never a JSON ``true``.

Firehose writes them to the Object-Locked audit bucket under
``events/source=<source>/year=/month=/day=/`` (:data:`components.storage.firehose.AUDIT_PREFIX`).
The Glue table below reads that layout with partition projection: no crawler, no
``MSCK REPAIR``, new days are queryable the moment they land.
"""

from __future__ import annotations

from typing import Any

from components.storage import firehose

MARKER_KEY = "audit"
SCHEMA = "v1"
ROUTING_REGEX = "^v[0-9]+$"  # any schema version, so a v2 emitter is still routed
SOURCES = ("inference", "mirror", "failover")
TABLE = "audit_events"
FIRST_YEAR = 2026  # partition projection's lower bound (events before it can't exist)

# (column, Hive type, what it holds). Athena's JSON SerDe matches JSON keys case-insensitively,
# so `requestId` fills `requestid`. Every source fills the first block; the rest are its own.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("audit", "string", "schema version of the event (v1)"),
    ("event", "string", "what happened: inference.request, mirror.publish, failover.transition"),
    ("time", "string", "when, ISO 8601 UTC (from_iso8601_timestamp(time) for arithmetic)"),
    ("subject", "string", "who: the JWT subject, the sync's identity, the node that acted"),
    ("resource", "string", "what it was done to: model, <repo>@<commit>, failover pair"),
    ("clientip", "string", "the client as the platform's entry reports it (inference)"),
    ("requestid", "string", "X-Request-ID (inference)"),
    ("tenant", "string", "tenant claim of the JWT (inference)"),
    ("model", "string", "model served (inference)"),
    ("route", "string", "API route (inference)"),
    ("status", "int", "HTTP status returned (inference)"),
    ("durationms", "double", "time to the last byte, ms (inference)"),
    ("tokensin", "bigint", "prompt tokens (inference)"),
    ("tokensout", "bigint", "generated tokens (inference)"),
    ("repo", "string", "Hugging Face repository (mirror)"),
    ("revision", "string", "revision asked for: commit, branch or tag (mirror)"),
    ("commit", "string", "commit published (mirror)"),
    ("files", "int", "files in the published manifest (mirror)"),
    ("bytes", "bigint", "bytes in the published manifest (mirror)"),
    ("refs", "array<string>", "names that now point at the commit (mirror)"),
    ("signed", "boolean", "the manifest was signed before any name pointed at it (mirror)"),
    ("pair", "string", "failover pair (failover)"),
    ("node", "string", "node whose state changed (failover)"),
    ("state", "string", "keepalived state entered: MASTER, BACKUP, FAULT, STOP (failover)"),
    ("kubernetes", "struct<namespace_name:string,pod_name:string,container_name:string,host:string>",
     "where the event was logged (added by Fluent Bit; absent for failover)"),
)  # fmt: skip
PARTITION_KEYS: tuple[tuple[str, str, str], ...] = (
    ("source", "string", "inference, mirror or failover (the event name's first part)"),
    ("year", "int", "UTC year the event reached Firehose"),
    ("month", "int", "UTC month the event reached Firehose"),
    ("day", "int", "UTC day the event reached Firehose"),
)


def location(bucket: str) -> str:
    return f"s3://{bucket}/{firehose.AUDIT_PREFIX.split('/', 1)[0]}/"


def location_template(bucket: str) -> str:
    """Partition projection's ``storage.location.template``: the stream's prefix, with the
    partition keys where Firehose writes their values."""
    prefix = (firehose.AUDIT_PREFIX.replace("!{partitionKeyFromQuery:source}", "${source}")
              .replace("!{timestamp:yyyy}", "${year}").replace("!{timestamp:MM}", "${month}")
              .replace("!{timestamp:dd}", "${day}"))  # fmt: skip
    if "!{" in prefix:
        raise ValueError(f"the audit prefix has an expression the table can't project: {firehose.AUDIT_PREFIX}")
    return f"s3://{bucket}/{prefix}"


def projection(bucket: str, last_year: int = 2100) -> dict[str, str]:
    """Table parameters for Athena partition projection over :func:`location_template`."""
    return {
        "projection.enabled": "true",
        "projection.source.type": "enum", "projection.source.values": ",".join(SOURCES),
        "projection.year.type": "integer", "projection.year.range": f"{FIRST_YEAR},{last_year}",
        "projection.month.type": "integer", "projection.month.range": "1,12", "projection.month.digits": "2",
        "projection.day.type": "integer", "projection.day.range": "1,31", "projection.day.digits": "2",
        "storage.location.template": location_template(bucket),
    }  # fmt: skip


def table_input(bucket: str) -> dict[str, Any]:
    """Glue ``TableInput`` (CreateTable's shape) of the audit events table."""
    return {
        "Name": TABLE,
        "Description": "Audit events of the platform (inference requests, mirror publishes, failovers); read-only, Object-Locked.",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "json", "compressionType": "gzip", "EXTERNAL": "TRUE", **projection(bucket)},
        "PartitionKeys": [{"Name": n, "Type": t, "Comment": c} for n, t, c in PARTITION_KEYS],
        "StorageDescriptor": {
            "Columns": [{"Name": n, "Type": t, "Comment": c} for n, t, c in COLUMNS],
            "Location": location(bucket),
            "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "Compressed": True,
            # A malformed line fails the query instead of vanishing from an audit answer.
            "SerdeInfo": {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe",
                          "Parameters": {"ignore.malformed.json": "false", "case.insensitive": "true"}},
        },
    }  # fmt: skip


def to_pulumi_table(api: dict[str, Any]) -> dict[str, Any]:
    """The same table as pulumi-aws's ``glue.CatalogTable`` arguments (its field names differ)."""
    descriptor = api["StorageDescriptor"]
    return {
        "name": api["Name"], "description": api["Description"], "table_type": api["TableType"],
        "parameters": api["Parameters"],
        "partition_keys": [{"name": k["Name"], "type": k["Type"], "comment": k["Comment"]} for k in api["PartitionKeys"]],
        "storage_descriptor": {
            "columns": [{"name": c["Name"], "type": c["Type"], "comment": c["Comment"]} for c in descriptor["Columns"]],
            "location": descriptor["Location"], "input_format": descriptor["InputFormat"],
            "output_format": descriptor["OutputFormat"], "compressed": descriptor["Compressed"],
            "ser_de_info": {"serialization_library": descriptor["SerdeInfo"]["SerializationLibrary"],
                            "parameters": descriptor["SerdeInfo"]["Parameters"]},
        },
    }  # fmt: skip


# Saved queries for finance and security (Athena named queries in the audit workgroup). Each
# `?` is an execution parameter Athena asks for when the query runs (a number, or a quoted
# string: '2026', "'user-17'"). Portable SQL on purpose: the tests run each one on DuckDB
# over objects the emulated stream delivered.
QUERIES: dict[str, tuple[str, str]] = {
    "tokens-by-tenant": (
        "Requests and tokens in and out per tenant and model, one month (finance). Parameters: year, month.",
        f"SELECT tenant, model, count(*) AS requests, sum(tokensin) AS tokens_in, sum(tokensout) AS tokens_out\n"
        f"FROM {TABLE}\nWHERE source = 'inference' AND year = ? AND month = ?\n"
        f"GROUP BY tenant, model\nORDER BY tokens_out DESC",
    ),
    "refused-requests-by-client": (
        "Requests refused (401, 403, 429) by client IP and subject, one day (security). Parameters: year, month, day.",
        f"SELECT clientip, subject, status, count(*) AS refusals\n"
        f"FROM {TABLE}\nWHERE source = 'inference' AND year = ? AND month = ? AND day = ? AND status IN (401, 403, 429)\n"
        f"GROUP BY clientip, subject, status\nORDER BY refusals DESC",
    ),
    "what-a-subject-did": (
        "Everything one subject did in a year, in order (security). Parameters: year, subject.",
        f"SELECT time, event, resource, route, status, clientip\n"
        f"FROM {TABLE}\nWHERE year = ? AND subject = ?\nORDER BY time",
    ),
    "publishes-and-failovers": (
        "Revisions published to the mirror and failover transitions in a year, in order (security, operations). "
        "Parameter: year.",
        f"SELECT time, event, subject, resource, commit, signed, node, state\n"
        f"FROM {TABLE}\nWHERE source IN ('mirror', 'failover') AND year = ?\nORDER BY time",
    ),
}  # fmt: skip

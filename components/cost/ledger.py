"""The deploy-time cost ledger: each deployment's estimate, kept to compare with actual spend.

Chosen over a Pulumi ResourceHook (see docs/cost.md): the estimate prices the whole plan,
so it belongs once per deployment, with its git revision, after `pulumi up` succeeds (the
deploy workflow's step `platformctl cost record`); a hook runs per resource inside the engine,
and Pulumi's mocks never run hooks. This function is what that step calls, tested on moto S3.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

LEDGER_PREFIX = "ledger"


def ledger_key(stack: str, revision: str, recorded_at: float) -> str:
    if not re.fullmatch(r"[\w.-]{1,100}", stack) or not re.fullmatch(r"[0-9a-f]{7,40}|local", revision):
        raise ValueError(f"stack {stack!r} / revision {revision!r}: not usable in a ledger key")
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(recorded_at))
    return f"{LEDGER_PREFIX}/{stack}/{stamp}-{revision}.json"


def ledger_entry(estimate: dict[str, Any], revision: str, recorded_at: float) -> dict[str, Any]:
    return {
        "stack": estimate["stack"],
        "revision": revision,
        "recordedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(recorded_at)),
        "totalMonthlyUsd": estimate["total_monthly"],
        "components": estimate["components"],
        "lines": estimate["lines"],
        "unpriced": estimate["unpriced"],
        "assumptions": estimate["assumptions"],
    }


def record(s3: Any, bucket: str, estimate: dict[str, Any], revision: str, recorded_at: float | None = None) -> str:
    """Write one deployment's estimate to the ledger bucket; returns its key. Never overwrites."""
    recorded_at = time.time() if recorded_at is None else recorded_at
    key = ledger_key(estimate["stack"], revision, recorded_at)
    body = json.dumps(ledger_entry(estimate, revision, recorded_at), indent=1, sort_keys=True).encode()
    # IfNoneMatch: a second record in the same second with the same revision must not replace the first.
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*")
    return key


def read_ledger(s3: Any, bucket: str, stack: str) -> list[dict[str, Any]]:
    """Every recorded estimate of ``stack``, oldest first."""
    entries = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{LEDGER_PREFIX}/{stack}/"):
        for item in page.get("Contents", []):
            entries.append(json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()))
    return sorted(entries, key=lambda e: e["recordedAt"])

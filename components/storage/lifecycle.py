"""The cold tier's S3 documents as S3's API takes them (pure).

One source: the component hands these structures to Pulumi (through :func:`to_pulumi`)
and the tests hand the very same structures to S3's API on moto with boto3
(``put_bucket_lifecycle_configuration``, ``put_bucket_policy``,
``put_object_lock_configuration``) and read them back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

ABORT_MULTIPART_DAYS = 7
# S3's rules for lifecycle transitions (PutBucketLifecycleConfiguration refuses the rest):
IA_MINIMUM_DAYS = 30  # to STANDARD_IA: at least 30 days after creation
DAYS_IN_IA_BEFORE_NEXT = 30  # out of STANDARD_IA: at least 30 days after moving in
# Minimum storage durations: leaving earlier is billed as if the object stayed.
MINIMUM_DAYS = {"STANDARD_IA": 30, "GLACIER_IR": 90, "DEEP_ARCHIVE": 180}


def schedule_problems(transitions: Sequence[tuple[str, str, int]], expire_days: int | None) -> list[tuple[str, int, str]]:
    """What S3 would refuse (or silently make pointless) in one class's schedule: (key, value, why).

    ``transitions`` are (config key, storage class, days) in tier order.
    """
    problems: list[tuple[str, int, str]] = []
    previous: tuple[str, str, int] | None = None
    for key, storage_class, days in transitions:
        if storage_class == "STANDARD_IA" and days < IA_MINIMUM_DAYS:
            problems.append((key, days, f"S3 moves objects to Standard-IA {IA_MINIMUM_DAYS} days after creation at the earliest"))
        if previous is not None:
            previous_key, previous_class, previous_days = previous
            if days <= previous_days:
                problems.append((key, days, f"must be later than {previous_key} ({previous_days}): a colder tier comes after a warmer one"))
            elif previous_class == "STANDARD_IA" and days < previous_days + DAYS_IN_IA_BEFORE_NEXT:
                problems.append((key, days, f"must be at least {previous_days + DAYS_IN_IA_BEFORE_NEXT}: S3 keeps objects "
                                            f"{DAYS_IN_IA_BEFORE_NEXT} days in Standard-IA ({previous_key} = {previous_days})"))  # fmt: skip
        previous = (key, storage_class, days)
    if expire_days is not None and previous is not None and expire_days <= previous[2]:
        problems.append(("expireDays", expire_days, f"must be later than the last transition, {previous[0]} ({previous[2]})"))
    return problems


def lifecycle_rules(transitions: Sequence[tuple[str, str, int]], expire_days: int | None,
                    noncurrent_expire_days: int) -> list[dict[str, Any]]:  # fmt: skip
    """The bucket's lifecycle rules (PutBucketLifecycleConfiguration ``Rules``)."""
    rule: dict[str, Any] = {
        "ID": "tiering",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "Transitions": [{"Days": days, "StorageClass": storage_class} for _, storage_class, days in transitions],
        "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_expire_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }
    if expire_days is not None:
        rule["Expiration"] = {"Days": expire_days}
    if not rule["Transitions"]:
        del rule["Transitions"]
    return [rule]


def tls_only_policy(bucket_arn: str) -> dict[str, Any]:
    """Deny every request over plain HTTP (the bucket's policy)."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]}  # fmt: skip


LOAD_BALANCER_LOG_PREFIX = "alb"  # load balancers' access logs, under <prefix>/AWSLogs/<account>/


def access_log_bucket_policy(bucket_arn: str, account_id: str, source_bucket_arns: Sequence[str],
                             elb_account_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    """S3 server access logging may write here, for our buckets only; with ``elb_account_id``, this
    region's Elastic Load Balancing may write load balancer access logs of this account under
    ``alb/`` (ELB can't write to SSE-KMS buckets, so they share this SSE-S3 one); TLS only for
    everyone else."""
    policy = tls_only_policy(bucket_arn)
    policy["Statement"].append({
        "Sid": "S3ServerAccessLogs", "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject", "Resource": f"{bucket_arn}/*",
        "Condition": {"StringEquals": {"aws:SourceAccount": account_id},
                      "ArnLike": {"aws:SourceArn": list(source_bucket_arns)}},
    })  # fmt: skip
    if elb_account_id is not None:
        # Regions older than August 2022 deliver as ELB's regional account, newer ones as the service.
        policy["Statement"].append({
            "Sid": "LoadBalancerAccessLogs", "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{elb_account_id}:root",
                          "Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
            "Action": "s3:PutObject", "Resource": f"{bucket_arn}/{LOAD_BALANCER_LOG_PREFIX}/AWSLogs/{account_id}/*",
        })  # fmt: skip
    return policy


def object_lock_configuration(days: int) -> dict[str, Any]:
    """Governance-mode default retention (PutObjectLockConfiguration ``ObjectLockConfiguration``)."""
    return {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": days}}}


NO_EXPIRY_HORIZON_DAYS = 365  # objects never expire: the estimate holds the last tier at one year of data


def steady_state_gb(daily_gb: float, transitions: Sequence[tuple[str, int]], expire_days: int | None) -> dict[str, float]:
    """GB held per storage class once the lifecycle has run long enough, writing ``daily_gb`` a day.

    ``transitions`` are (storage class, days) in order. An object spends the days between one
    transition and the next in each class; the last class holds it until expiry (or, with no
    expiry, for :data:`NO_EXPIRY_HORIZON_DAYS`, since nothing steady exists then).
    """
    ages = [("STANDARD", 0), *transitions]
    end = expire_days if expire_days is not None else max(NO_EXPIRY_HORIZON_DAYS, ages[-1][1] + 1)
    held: dict[str, float] = {}
    for (storage_class, start), (_, stop) in zip(ages, [*ages[1:], ("END", end)]):
        held[storage_class] = held.get(storage_class, 0.0) + daily_gb * max(0, min(stop, end) - start)
    return held


def _snake(name: str) -> str:
    return "id" if name == "ID" else re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def to_pulumi(value: Any) -> Any:
    """An S3 API structure (lifecycle rules, Object Lock) as pulumi-aws arguments: the same data, snake_case keys."""
    if isinstance(value, dict):
        return {_snake(key): to_pulumi(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_pulumi(item) for item in value]
    return value

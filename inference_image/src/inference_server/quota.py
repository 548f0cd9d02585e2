"""Per-tenant request quotas: a token bucket per tenant, the tenant named by a JWT claim.

Enforced in the server, not the ingress, so the limit holds behind any ingress (ALB, ingress-nginx,
port-forward). Each replica keeps its own buckets: a tenant's sustained rate across a deployment
is the per-replica rate times the ready replicas (docs/ingress.md).

A token bucket (rather than a fixed window) lets an idle tenant send a burst at once and then
holds it to its sustained rate. ``limits`` (the library behind slowapi) offers fixed and moving
windows only.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


_EPSILON = 1e-9


@dataclass(frozen=True)
class Limit:
    per_minute: int  # sustained rate
    burst: int  # bucket size

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.burst < 1:
            raise ValueError(f"tenant limits must be positive (per_minute={self.per_minute}, burst={self.burst})")

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass
class Bucket:
    tokens: float
    updated: float  # monotonic seconds

    def take(self, limit: Limit, now: float) -> float:
        """Take one token if there is one; 0 when allowed, else the seconds until one is due."""
        self.tokens = min(limit.burst, self.tokens + (now - self.updated) * limit.per_second)
        self.updated = now
        # A hair under one token counts as one: refilling for exactly the Retry-After we gave can
        # land at 0.9999999999999999 in floating point, and the client did as told.
        if self.tokens >= 1 - _EPSILON:
            self.tokens = max(0.0, self.tokens - 1)
            return 0.0
        return (1 - self.tokens) / limit.per_second


@dataclass
class TenantQuotas:
    """Buckets by tenant; thread-safe (the API runs on one loop, but tests and tools may not)."""

    claim: str
    default: Limit
    overrides: Mapping[str, Limit] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    max_tenants: int = 100_000  # idle tenants' buckets are refilled to full, so forgetting them changes nothing
    _buckets: dict[str, Bucket] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tenant(self, claims: Mapping[str, object]) -> str | None:
        value = claims.get(self.claim)
        return value if isinstance(value, str) and value else None

    def limit(self, tenant: str) -> Limit:
        return self.overrides.get(tenant, self.default)

    def check(self, tenant: str) -> int:
        """0 when the request may proceed; otherwise the whole seconds to put in Retry-After (at least 1)."""
        limit, now = self.limit(tenant), self.clock()
        with self._lock:
            bucket = self._buckets.get(tenant)
            if bucket is None:
                if len(self._buckets) >= self.max_tenants:
                    self._forget_full(now)
                bucket = self._buckets[tenant] = Bucket(tokens=float(limit.burst), updated=now)
            wait = bucket.take(limit, now)
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def _forget_full(self, now: float) -> None:
        for name in [n for n, b in self._buckets.items()
                     if b.tokens + (now - b.updated) * self.limit(n).per_second >= self.limit(n).burst]:  # fmt: skip
            del self._buckets[name]

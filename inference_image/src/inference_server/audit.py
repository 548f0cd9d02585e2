"""One audit event per API request: who asked which model what kind of thing, never what.

Written as a JSON log line by the ``inference_server.audit`` logger, which logs at INFO
whatever ``--log-level`` says: audit is not a debugging aid to be turned down. Each line
carries ``"audit": "v1"`` (the event schema's version, a string: Fluent Bit's routing rule
matches strings only), and Fluent Bit moves it to the audit stream (docs/audit.md).

Never in an event: the prompt, the messages, the completion, the token itself.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("inference_server.audit")
log.setLevel(logging.INFO)

EVENT = "inference.request"
SCHEMA = "v1"


def client_ip(headers: Mapping[bytes, bytes], peer: str | None) -> str | None:
    """The client as the platform's entries report it.

    ingress-nginx sets X-Real-IP, after trusting only its configured proxies. The ALB appends
    the address it saw to X-Forwarded-For (``xff_header_processing.mode=append``), so the last
    entry is the one our ALB vouches for; anything earlier came from the client. Without
    either header, the peer itself is the client.
    """
    real = headers.get(b"x-real-ip", b"").decode("latin-1").strip()
    if real:
        return real
    forwarded = [part.strip() for part in headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",") if part.strip()]
    return forwarded[-1] if forwarded else peer


def event(*, request_id: str, route: str, status: int, duration_s: float, headers: Mapping[bytes, bytes],
          peer: str | None, state: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The event's fields (pure): only identifiers, counts and outcome."""
    generation = state.get("generation")
    return {
        "event": EVENT, "audit": SCHEMA,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestId": request_id, "route": route, "status": status, "durationMs": round(duration_s * 1000, 1),
        "subject": state.get("subject"), "tenant": state.get("tenant"), "model": state.get("model"),
        "resource": state.get("model"),
        "tokensIn": len(generation.prompt_ids) if generation is not None else 0,
        "tokensOut": len(generation.tokens) if generation is not None else 0,
        "clientIp": client_ip(headers, peer),
    }  # fmt: skip


def emit(record: dict[str, Any]) -> None:
    log.info("audit", extra=record)

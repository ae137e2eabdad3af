"""Parley's signature on a tool request, so the tool's server knows the request came from this agent, unchanged.

``X-Parley-Timestamp``: Unix seconds; ``X-Parley-Signature``: ``v1=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"``
with the shared secret (a GET signs the empty body). A receiver recomputes it (:func:`verify`) and refuses old
timestamps, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Parley-Timestamp"
SIGNATURE_HEADER = "X-Parley-Signature"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def sign(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that sign ``body`` now."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    sent: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``sent`` signs ``body`` at ``timestamp`` with ``secret``, within ``tolerance_s`` of now
    (constant-time comparison)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(signature(secret, timestamp, body), sent)

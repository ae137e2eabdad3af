"""A webhook delivery's headers: the tool-request scheme of :mod:`parley.tools.signing`, reused unchanged.

``X-Parley-Timestamp`` (Unix seconds) and ``X-Parley-Signature`` = ``v1=`` + hex HMAC-SHA256 of
``"{timestamp}.{body}"`` under the webhook's secret; a receiver checks it with :func:`verify` and refuses old
timestamps. ``X-Parley-Event-Id`` lets it drop a retried delivery it already handled.
"""

from __future__ import annotations

from parley.tools.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify

EVENT_ID_HEADER = "X-Parley-Event-Id"
EVENT_TYPE_HEADER = "X-Parley-Event"

__all__ = ["EVENT_ID_HEADER", "EVENT_TYPE_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "headers", "verify"]


def headers(secret: str, body: bytes, event_id: str, event_type: str) -> dict[str, str]:
    """Everything a delivery sends besides the body (the secret itself never leaves)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "Parley-Webhooks/1",
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
        **sign(secret, body),
    }

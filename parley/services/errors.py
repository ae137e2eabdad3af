"""One error type for every provider failure, classified so a fallback chain knows what to do with it.

A provider (cloud STT, TTS or LLM) turns its SDK's or its server's failure into :class:`ProviderError` with a
``kind``. A **permanent** kind (the key is wrong, the model or voice does not exist, the quota is spent, the
language is not offered) takes the provider out of its chain until its configuration changes; a **transient**
one (a timeout, a 5xx, a reset, a 429) opens its circuit breaker for a while. Messages name the provider and the
URL, never a credential.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    AUTH = "auth"  # 401/403: the key is wrong or lacks the permission
    NOT_FOUND = "not-found"  # unknown model, deployment or voice
    QUOTA = "quota"  # the account's quota or credit is spent (not a rate limit)
    UNSUPPORTED = "unsupported"  # the language, format or option is not offered by this provider
    BAD_REQUEST = "bad-request"  # 400 for a request Parley built: a bug or a wrong option, not worth retrying
    RATE_LIMIT = "rate-limit"  # 429: try again after ``retry_after``
    TIMEOUT = "timeout"  # connect, first byte or stall deadline passed
    SERVER = "server"  # 5xx
    CONNECTION = "connection"  # refused, reset, closed mid-stream, DNS
    BAD_RESPONSE = "bad-response"  # not the documented shape: garbage JSON, an HTML error page


PERMANENT_KINDS = frozenset({ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.QUOTA, ErrorKind.UNSUPPORTED,
                             ErrorKind.BAD_REQUEST})  # fmt: skip


class ProviderError(RuntimeError):
    """A provider could not serve this request; ``kind`` says why (an :class:`ErrorKind`)."""

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind | str = ErrorKind.SERVER,
        provider: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.provider = provider
        self.status = status
        self.retry_after = retry_after

    @property
    def permanent(self) -> bool:
        return self.kind in PERMANENT_KINDS


def kind_for_status(status: int, body: str = "") -> ErrorKind:
    """The kind an HTTP status means (``body`` tells a spent quota from a rate limit on a 429 or 402/403)."""
    text = body.lower()
    spent = "quota" in text or "insufficient" in text or "credit" in text
    if status == 429:
        return ErrorKind.QUOTA if spent else ErrorKind.RATE_LIMIT
    if status == 402:
        return ErrorKind.QUOTA
    if status in (401, 403):
        return ErrorKind.QUOTA if "quota" in text else ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status in (400, 409, 413, 415, 422):
        return ErrorKind.UNSUPPORTED if "language" in text else ErrorKind.BAD_REQUEST
    if status == 408:
        return ErrorKind.TIMEOUT
    return ErrorKind.SERVER


def retry_after_secs(value: str | None) -> float | None:
    """A ``Retry-After`` header's seconds (its HTTP-date form is rare from APIs and read as unknown)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None

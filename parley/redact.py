"""Masks credentials in anything bound for a log: API keys, bearer tokens, JWTs, signatures, passwords in URLs,
and the values of the service's own secret settings.

A log is read by more people, kept longer and copied to more places than the database it describes, so a key
that reaches it is as good as published. Patterns are linear (no nested quantifiers), so a hostile string costs
time proportional to its length; callers bound the length first.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"
MIN_SECRET_CHARS = 6  # shorter registered values would mask ordinary words everywhere
_MAX_DEPTH = 6

# Each pattern starts only where a token starts (a look-behind) and scans a bounded or disjoint stretch from there:
# linear time on any input. A field or parameter named like a credential: token=, key=, "api_key": , Cookie: …
_NAME = (
    r"[\w.-]{0,40}?(?:api[_-]?key|key|token|secret|password|passwd|pwd|signature|sig|authorization|cookie"
    r"|credentials?|auth)(?:[_-]v\d)?"  # X-Plivo-Signature-V3
)
_NAMED_VALUE = re.compile(
    rf"(?i)(?<![\w.-])({_NAME})([\"']?\s{{0,5}}[:=]\s{{0,5}})(?!(?:b?[\"'])?\[REDACTED)"
    r"(b?\"[^\"\n]{0,500}\"|b?'[^'\n]{0,500}'|(?:(?:bearer|basic|digest|token)\s+)?[^\s\"'&,;)}\]>]+)"
)
# The same as a (name, value) pair, the way ASGI scopes and header lists print: (b'x-api-key', b'pk_…')
_HEADER_PAIR = re.compile(rf"(?i)(b?[\"']{_NAME}[\"']\s{{0,5}},\s{{0,5}}b?[\"'])(?!\[REDACTED)([^\"']+)")
_SCHEME = re.compile(r"\b(Bearer|Basic|Digest|Token|bearer|basic)\s{1,5}(?!\[REDACTED)[A-Za-z0-9._~+/=-]{6,}")
_TOKEN_START = r"(?<![A-Za-z0-9_-])"
_PARLEY_KEY = re.compile(_TOKEN_START + r"(pk_[A-Za-z0-9_-]{9})[A-Za-z0-9_-]{11,}")  # keep the prefix the API shows
_JWT = re.compile(_TOKEN_START + r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_URL_PASSWORD = re.compile(
    r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,30}://[^\s:/@]{0,200}:)(?!\[REDACTED)[^\s@/]{1,500}@"
)
# Field names whose whole value is masked: narrower than _NAME, so that a blob's ``key=`` stays readable.
_SECRET_FIELD = re.compile(
    r"(?i)[\w.-]*?(?:api[_-]?key|secret[_-]?key|private[_-]?key|access[_-]?key|token|secret|password|passwd|pwd"
    r"|signature|authorization|cookie|credentials?)"
)

_lock = threading.Lock()
_known: set[str] = set()
_known_re: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember values that must never be written out, whatever their shape (secret settings, generated keys)."""
    global _known_re
    fresh = {v for v in values if v and len(v) >= MIN_SECRET_CHARS} - _known
    if not fresh:
        return
    with _lock:
        _known.update(fresh)
        alternation = "|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True))
        _known_re = re.compile(alternation)


def register_settings_secrets(settings: Any) -> None:
    """Every ``SecretStr`` field of a pydantic settings object (parley.config.Settings) that is set."""
    from pydantic import SecretStr

    register_secrets(
        value.get_secret_value()
        for name in type(settings).model_fields
        if isinstance(value := getattr(settings, name, None), SecretStr)
    )


def redact_text(text: str) -> str:
    """``text`` with every credential it carries replaced by ``[REDACTED]`` (idempotent)."""
    known = _known_re
    if known is not None:
        text = known.sub(MASK, text)
    text = _NAMED_VALUE.sub(_mask_named, text)
    text = _HEADER_PAIR.sub(lambda m: m.group(1) + MASK, text)
    text = _SCHEME.sub(lambda m: m.group(1) + " " + MASK, text)
    text = _PARLEY_KEY.sub(lambda m: m.group(1) + MASK, text)
    text = _JWT.sub(MASK, text)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)


def _mask_named(m: re.Match[str]) -> str:
    value = m.group(3)
    if value[-1:] in "\"'" and len(value) > 1 and value[0] in "b\"'":  # a quoted value: keep its quotes
        quote = value[-1]
        return m.group(1) + m.group(2) + value[: value.index(quote) + 1] + MASK + quote
    return m.group(1) + m.group(2) + MASK


def is_secret_field(name: str) -> bool:
    """A field named ``token``, ``api_key``, ``authorization``…: its whole value is masked, whatever it looks like."""
    return _SECRET_FIELD.fullmatch(name) is not None


def redact_value(value: Any, max_chars: int, depth: int = 0) -> Any:
    """Redacts strings inside ``value`` (dicts, lists, tuples; other objects by their ``repr``), each string cut to
    ``max_chars``: a log line stays bounded whatever a caller passed."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        return {
            str(k): (MASK if is_secret_field(str(k)) and v else redact_value(v, max_chars, depth + 1))
            for k, v in list(value.items())[:100]
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, max_chars, depth + 1) for v in list(value)[:100]]
    text = value if isinstance(value, str) else _safe_repr(value)
    text = redact_text(text[: max_chars * 2])  # redaction before the final cut: no secret is cut in half
    return text if len(text) <= max_chars else text[:max_chars] + f"… [{len(text) - max_chars} chars cut]"


def _safe_repr(value: Any) -> str:
    try:
        return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the log line
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"

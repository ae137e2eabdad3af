"""The lexical pieces every SIP parser shares (RFC 3261 section 25): the parse error, numbers, tokens, parameters.

At the bottom of the protocol layer: ``uri``, ``message``, ``sdp`` and ``transactions`` build on it, and it
imports none of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["TOKEN", "SipParseError", "format_params", "number", "parse_params", "split_quoted"]

TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


class SipParseError(ValueError):
    """Malformed SIP. ``partial``: the request as far as it could be read, when a 400 can be built from it."""

    def __init__(self, message: str, partial: object | None = None) -> None:
        super().__init__(message)
        #: a ``message.Request``; typed loosely so that this module, at the bottom, imports nothing above it
        self.partial = partial


def number(text: str, max_digits: int = 10) -> int | None:
    """``text`` as a non-negative integer if it is 1 to ``max_digits`` ASCII digits, else None.

    ``str.isdigit`` also accepts '²' and other Unicode digits, which ``int`` then refuses (or reads as
    Arabic-Indic numbers), and ``int`` refuses 4,300+ digits: a peer's bytes must not reach either.
    """
    text = text.strip()
    if not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def split_quoted(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside double quotes and angle brackets (a URI holds ``;`` and ``,``)."""
    if '"' not in text and "<" not in text and ">" not in text:
        return text.split(sep)  # the usual case, without a loop over every character
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    depth = 0
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">" and depth:
            depth -= 1
        elif ch == sep and not quoted and depth == 0:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if quoted or depth:
        raise SipParseError(f"unbalanced quotes or brackets in {text[:80]!r}")
    parts.append("".join(buf))
    return parts


def parse_params(parts: Iterable[str]) -> dict[str, str | None]:
    """``;name=value`` parameters (names lower-cased, quotes kept as sent)."""
    params: dict[str, str | None] = {}
    for part in parts:
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not TOKEN.match(name):
            raise SipParseError(f"bad parameter name {name[:40]!r}")
        params[name] = value.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())

"""WebSocket connections to a tenant-chosen base URL (Deepgram, ElevenLabs), through the outbound guard.

A streaming provider's ``base_url`` is tenant-chosen, as an HTTP one is: the host is resolved by the outbound
policy (:mod:`parley.net.ssrf`) and the socket connects to an address that was checked, trying each in turn, while
the Host header and the TLS server name stay the URL's (so TLS still verifies the host name). No proxy: it would
resolve the name where the guard cannot see. websockets logs every handshake header (the key too) and every frame
at DEBUG, so its logger here never goes below INFO.

The failures are classified once: a refused handshake (:class:`~websockets.exceptions.InvalidStatus`) is passed
on as it is, since each vendor's error body is its own; everything else becomes :class:`WsConnectError`, whose
message names the URL (without its query) and never a header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from parley.net.ssrf import OutboundPolicy, OutboundRefused
from parley.services.errors import ErrorKind

#: the WebSocket scheme each accepted base-URL scheme means (stored documents may only hold http(s))
WS_SCHEMES = {"wss": "wss", "ws": "ws", "https": "wss", "http": "ws"}
_WIRE = logging.getLogger(f"{__name__}.wire")


class WsConnectError(Exception):
    """No WebSocket could be opened; ``kind`` says why (an :class:`ErrorKind`), the message names the URL."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


class _WireLog(logging.LoggerAdapter[logging.Logger]):
    """websockets logs every handshake header (the key too) and every frame at DEBUG: never here."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.INFO and self.logger.isEnabledFor(level)


def ws_url(value: str) -> str:
    """A base URL option, checked (for a pydantic field validator): ws(s) or http(s) with a host, nothing else."""
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in WS_SCHEMES or not parts.hostname:
        raise ValueError("must be a wss://, ws://, https:// or http:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must not hold credentials, a query or a fragment")
    return value.strip()


@dataclass(frozen=True)
class WsEndpoint:
    """One WebSocket URL (no query, never a key: safe in messages) and the host and port to resolve for it."""

    url: str
    host: str
    port: int

    @classmethod
    def parse(cls, base_url: str, path: str = "") -> WsEndpoint:
        """``path`` under a base URL that :func:`ws_url` accepted; https:// is read as wss://, http:// as ws://."""
        parts = urlsplit(base_url)
        scheme = WS_SCHEMES[parts.scheme.lower()]
        base = parts._replace(scheme=scheme).geturl().rstrip("/")
        return cls(f"{base}{path}", parts.hostname or "", parts.port or (443 if scheme == "wss" else 80))

    async def checked_addresses(self, wait_s: float | None = None) -> list[str]:
        """The host's addresses, each allowed by the outbound policy (else OutboundRefused)."""
        policy = OutboundPolicy.from_settings()
        problem = policy.url_problem("http" + self.url.removeprefix("ws"))  # the guard speaks http(s) schemes
        if problem:
            raise OutboundRefused(f"refused: {self.host} {problem}")
        return await policy.resolve(self.host, self.port, wait_s)


async def connect_guarded(
    endpoint: WsEndpoint,
    headers: Mapping[str, str],
    *,
    query: str,
    timeout_s: float,
    wire_logger: logging.Logger = _WIRE,
    **options: Any,
) -> ClientConnection:
    """A connection to ``endpoint`` (``?query`` added), DNS to handshake within ``timeout_s``.

    ``options`` go to websockets' ``connect`` (``compression``, ``max_size``). Raises InvalidStatus for a refused
    handshake and :class:`WsConnectError` for every other failure."""
    uri = f"{endpoint.url}?{query}" if query else endpoint.url
    try:
        async with asyncio.timeout(timeout_s):
            return await _open(endpoint, uri, headers, _WireLog(wire_logger, {}), options)
    except TimeoutError:
        message = f"no WebSocket handshake with {endpoint.url} within {timeout_s:g} s"
        raise WsConnectError(message, ErrorKind.TIMEOUT) from None
    except httpcore.TimeoutException:
        raise WsConnectError(f"resolving {endpoint.host} took longer than {timeout_s:g} s", ErrorKind.TIMEOUT) from None
    except InvalidStatus:
        raise
    except OutboundRefused as exc:  # the operator's policy: permanent until the document changes
        raise WsConnectError(str(exc), ErrorKind.BAD_REQUEST) from None
    except (httpcore.ConnectError, OSError, InvalidHandshake) as exc:
        dropped = not isinstance(exc, InvalidHandshake) or isinstance(exc.__cause__, EOFError | OSError)
        kind = ErrorKind.CONNECTION if dropped else ErrorKind.BAD_RESPONSE  # else: not an HTTP/WS answer
        raise WsConnectError(f"cannot open a WebSocket to {endpoint.url} ({type(exc).__name__})", kind) from None


async def _open(
    endpoint: WsEndpoint, uri: str, headers: Mapping[str, str], logger: _WireLog, options: dict[str, Any]
) -> ClientConnection:
    """Connect to an address the outbound policy checked, trying each in turn."""
    last: Exception = OSError(f"{endpoint.host} has no address")
    for address in await endpoint.checked_addresses():
        try:
            return await connect(
                uri,
                additional_headers=headers,
                host=address,  # the checked address; the Host header and TLS name stay the URL's
                port=endpoint.port,
                proxy=None,  # a proxy would resolve the name where the guard cannot see
                open_timeout=None,  # bounded by timeout_s around all addresses
                close_timeout=1.0,
                logger=logger,
                **options,
            )
        except OSError as exc:
            last = exc
    raise last

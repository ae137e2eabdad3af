"""One ``httpx.AsyncClient`` per outside service (a carrier's REST API, an identity provider), shared by its requests.

A client per request paid a TCP and TLS handshake every time and threw its connection pool away. A client's
connections belong to the event loop that opened them, so clients are kept per loop (the CLI and the tests run
several) and the app closes its loop's clients when it stops. No cookie is kept: a Set-Cookie from one answer must
not ride on the next request. Tenant-chosen URLs do not come here: they take the SSRF guard's client (``ssrf``).
"""

from __future__ import annotations

import asyncio
import weakref
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def shared_client(service: str, timeout: float = 15.0) -> httpx.AsyncClient:
    """The running loop's client for ``service`` (made on first use, with ``timeout``)."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(service)
    if client is None or client.is_closed:
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        client = per_loop[service] = httpx.AsyncClient(timeout=timeout, cookies=no_cookies)
    return client


async def close_clients() -> None:
    """Close the running loop's clients (the app's shutdown)."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()

"""parley.net.clients: one HTTP client per outside service and event loop, closed with the app, keeping no cookie."""

from __future__ import annotations

import asyncio

import httpx

from parley.net.clients import close_clients, shared_client


async def _clients() -> tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient, bool]:
    first, again, other = shared_client("plivo"), shared_client("plivo"), shared_client("vonage", timeout=3)
    answer = httpx.Response(200, headers={"set-cookie": "session=abc"}, request=httpx.Request("GET", "https://a.test/"))
    first.cookies.extract_cookies(answer)
    kept = bool(first.cookies)
    await close_clients()
    return first, again, other, kept


def test_one_client_per_service_and_loop_closed_at_shutdown() -> None:
    first, again, other, kept = asyncio.run(_clients())
    assert first is again and first is not other and other.timeout.connect == 3
    assert first.is_closed and other.is_closed and not kept
    assert asyncio.run(_clients())[0] is not first  # another loop, another client

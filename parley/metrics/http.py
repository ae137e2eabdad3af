"""Service metrics: HTTP requests by route template and status (a pure ASGI middleware), rate-limit refusals,
the event loop's lag (a small monitor task), and who may scrape.

The route label is the matched route's template (``/v1/calls/{call_id}``), read from the scope after routing;
a request no route matched is ``unmatched``, so a scanner walking a million paths adds one series, not a million.
Methods outside the usual few are ``OTHER``. WebSockets are not counted here (a call is counted as a call).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.metrics.registry import FAST_BUCKETS, OTHER, REGISTRY

HTTP_REQUESTS = Counter(
    "parley_http_requests_total", "HTTP requests by route template, method and status",
    ["route", "method", "status"], registry=REGISTRY,
)  # fmt: skip
HTTP_DURATION = Histogram(
    "parley_http_request_duration_seconds", "HTTP request handling time by route template", ["route"],
    buckets=FAST_BUCKETS, registry=REGISTRY,
)  # fmt: skip
RATE_LIMITED = Counter(
    "parley_rate_limited_total", "Requests refused by a rate limit, by what was limited (addr, who, telephony)",
    ["scope"], registry=REGISTRY,
)  # fmt: skip
LOOP_LAG = Histogram(
    "parley_event_loop_lag_seconds", "How late the event loop woke a timer (every 0.25 s): the loop was busy",
    buckets=FAST_BUCKETS, registry=REGISTRY,
)  # fmt: skip
LOOP_LAG_LAST = Gauge("parley_event_loop_lag_last_seconds", "The event loop's latest measured lag",
                      registry=REGISTRY)  # fmt: skip
BUILD = Gauge("parley_build_info", "1, with the running version", ["version"], registry=REGISTRY)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
LIMIT_SCOPES = frozenset({"addr", "who", "telephony"})


def route_template(scope: Scope) -> str:
    """The template of the route the router matched (set on the scope it routed), else ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else UNMATCHED


class HttpMetricsMiddleware:
    """Counts each HTTP request once its response starts (or as a 500 if the app raised before it did)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = route_template(scope)
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(route, method if method in METHODS else OTHER, str(status)).inc()
            HTTP_DURATION.labels(route).observe(time.perf_counter() - started)


def rate_limited(key: str) -> None:
    """A request refused by the rate limiter; only the key's kind (``addr:…`` -> ``addr``) becomes a label."""
    kind = key.split(":", 1)[0]
    RATE_LIMITED.labels(kind if kind in LIMIT_SCOPES else OTHER).inc()


async def watch_loop(interval: float = 0.25) -> None:
    """Forever: sleep ``interval`` and record how much later than asked the loop woke this task."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - asked)
        LOOP_LAG.observe(lag)
        LOOP_LAG_LAST.set(lag)


def start_loop_monitor() -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(watch_loop(), name="metrics-loop-lag")


async def stop_loop_monitor(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def scrape_refusal(token: Any, allow: list[str], client: str | None, authorization: str | None) -> int | None:
    """Whether a scrape may proceed: None when it may, else the status to answer.

    Allowed when the client's address is in ``allow`` (``PARLEY_METRICS_ALLOW`` CIDRs: the address after
    ``PARLEY_TRUSTED_PROXIES`` is applied) or it sends ``token`` (``PARLEY_METRICS_TOKEN``) as a bearer token.
    Neither configured: 404 (there is no metrics endpoint). A wrong or missing token: 401; an address not listed
    when only the list is configured: 403.
    """
    if token is None and not allow:
        return 404
    if allow and client and _listed(client, allow):
        return None
    if token is None:
        return 403
    given = (authorization or "").removeprefix("Bearer ").strip()
    if hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        return None
    return 401


def _listed(client: str, allow: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(net) for net in allow)

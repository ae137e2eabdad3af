"""Request rate limits, per API key and per client address.

Built on the ``limits`` library's moving-window strategy: unlike a fixed window it cannot be gamed by
bursting at a window boundary. With ``redis_url`` set the counters live in Redis, so every worker
process (and every host) enforces one shared limit; without it they live in this process's memory,
which is right for a single-process install.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from parley.metrics import rate_limited

__all__ = ["RateDecision", "RateLimitUnavailable", "RateLimiter"]

_NAMESPACE = "parley"
#: what a shared store that went away raises (a pooled connection it closed, a refused connect, a timeout)
_STORE_DOWN = (RedisConnectionError, RedisTimeoutError, StorageError, OSError)
#: how long a client should wait when the limits cannot be checked
UNAVAILABLE_RETRY_S = 5

log = structlog.get_logger(__name__)


class RateLimitUnavailable(RuntimeError):
    """The shared counters (Redis) cannot be reached: the request is refused (503), never let through unlimited
    and never a 500."""


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one request against one limit; ``retry_after`` feeds the HTTP Retry-After header."""

    allowed: bool
    retry_after: float  # seconds until a request would be allowed: 0 when allowed, ≥ 1 when refused
    remaining: int  # requests left in the current window after this one
    limit: int  # the limit's amount, for X-RateLimit-Limit


class RateLimiter:
    """Moving-window limits, in Redis when ``redis_url`` is given (shared across processes), else in memory."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._storage: Storage
        if redis_url:
            # limits selects its async Redis client by an ``async+`` scheme prefix; redis-py is what Parley ships.
            uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
            self._storage = RedisStorage(uri, implementation="redispy")
        else:
            self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._items: dict[str, RateLimitItem] = {}
        self._down = False  # logged once per outage, not once per request

    def _item(self, limit: str) -> RateLimitItem:
        # Parsed once per distinct string: the same few limits are checked on every request.
        item = self._items.get(limit)
        if item is None:
            item = parse(limit)  # raises ValueError for strings like "lots/minute"
            self._items[limit] = item
        return item

    async def hit(self, key: str, limit: str) -> RateDecision:
        """Count one request for ``key`` under ``limit`` (e.g. "600/minute"); refused requests are not counted.

        Raises RateLimitUnavailable when the shared store cannot be reached after one retry (the retry takes a
        fresh connection: after a Redis restart every pooled one fails once)."""
        item = self._item(limit)
        try:
            try:
                decision = await self._hit(item, key)
            except _STORE_DOWN:
                decision = await self._hit(item, key)
        except _STORE_DOWN as exc:
            if not self._down:
                self._down = True
                log.warning("rate_limit_store_unavailable", error=type(exc).__name__)
            raise RateLimitUnavailable("rate limits cannot be checked: their store (Redis) is unreachable") from None
        if self._down:
            self._down = False
            log.info("rate_limit_store_back")
        return decision

    async def _hit(self, item: RateLimitItem, key: str) -> RateDecision:
        allowed = await self._limiter.hit(item, _NAMESPACE, key)
        stats = await self._limiter.get_window_stats(item, _NAMESPACE, key)
        remaining = max(0, stats.remaining)
        if allowed:
            return RateDecision(True, 0.0, remaining, item.amount)
        rate_limited(key)  # parley_rate_limited_total, by the key's kind only
        # reset_time is when the oldest request in the window ages out, freeing one slot.
        retry_after = max(1.0, float(math.ceil(stats.reset_time - time.time())))
        return RateDecision(False, retry_after, remaining, item.amount)

    async def aclose(self) -> None:
        """Release the Redis connection pool (or the memory storage's expiry task)."""
        if isinstance(self._storage, RedisStorage):
            client = getattr(self._storage.bridge, "storage", None)
            if client is not None:
                await client.aclose()
        else:
            timer: asyncio.Task[None] | None = getattr(self._storage, "timer", None)
            if timer is not None and not timer.done():
                timer.cancel()

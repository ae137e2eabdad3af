"""One-use tokens: a signature, a nonce or a talk token is accepted once, until it expires.

Replay defence needs memory shared by every worker that could receive the replay: with ``redis_url``
set the used keys live in Redis (``SET NX PX``: atomic across processes and hosts); without it they live
in this process, which is right for a single-process install. Keys are remembered only until the token
they protect expires, so memory stays bounded by the rate of fresh tokens.
"""

from __future__ import annotations

import hashlib
import heapq
import time

from redis.asyncio import Redis

__all__ = ["NonceStore"]

_PREFIX = "parley:once:"
_MAX_MEMORY_KEYS = 1_000_000  # a flood of fresh nonces cannot grow memory without bound


class NonceStore:
    """``await use(key, ttl_s)`` is True the first time ``key`` is used within ``ttl_s`` seconds, else False."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._redis: Redis | None = Redis.from_url(redis_url) if redis_url else None
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    @staticmethod
    def _digest(key: str) -> str:
        # Fixed-size keys whatever the caller sends (a token may be long or hold secrets).
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    async def use(self, key: str, ttl_s: float) -> bool:
        """Mark ``key`` used; True when it had not been used (and not expired) before."""
        digest = self._digest(key)
        if self._redis is not None:
            ok = await self._redis.set(_PREFIX + digest, b"1", nx=True, px=max(1, int(ttl_s * 1000)))
            return bool(ok)
        now = time.monotonic()
        self._expire(now)
        if digest in self._seen:
            return False
        if len(self._seen) >= _MAX_MEMORY_KEYS:
            return False  # refuse rather than forget: forgetting would re-open a replay
        until = now + ttl_s
        self._seen[digest] = until
        heapq.heappush(self._expiry, (until, digest))
        return True

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            until, digest = heapq.heappop(self._expiry)
            if self._seen.get(digest) == until:
                del self._seen[digest]

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

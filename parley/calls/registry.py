"""The call registry: which worker holds which live call, kept alive by heartbeats, and what happens when one dies.

:class:`~parley.calls.hangups.LiveCalls` (every transport's calls pass through it) tells the registry when a call
starts and ends. Embedded (no ``PARLEY_REDIS_URL``) the registry is this process's own set. With Redis it is
shared by every worker, as plain keys with a TTL refreshed every couple of seconds:

- ``parley:reg:worker:<worker>``: the worker is alive (its live calls, whether it drains), TTL ``registry_ttl_s``;
- ``parley:reg:call:<call id>``: the worker holding that call, same TTL;
- ``parley:reg:set:workers``: a sorted set of every worker's last heartbeat (what expired keys can no longer say).

Each worker's heartbeat also looks for workers whose last heartbeat is older than the TTL and whose key is gone (a
``kill -9``, a lost node): one worker claims the dead one (``SET NX``, so only one does the work) and ends its
calls in the database as ``worker-lost``, their recordings finished from what reached storage
(:mod:`parley.calls.recovery`). A worker that stops cleanly takes itself out of the set.

When Redis cannot be reached, :attr:`CallRegistry.healthy` turns false: calls in progress go on, new calls are
refused (:mod:`parley.calls.capacity`) rather than silently run unregistered, and the heartbeat re-registers every
live call as soon as Redis answers again.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

import structlog

from parley.store.blobs import BlobStore
from parley.store.db import Database

log = structlog.get_logger(__name__)

WORKER_LOST = "worker-lost"
PREFIX = "parley:reg"
REDIS_TIMEOUT_S = 1.0  # a hung Redis fails a heartbeat (and readiness) within this, never stalls it


class CallRegistry:
    """Embedded: this process's live calls only (one worker; a crash is recovered at its restart)."""

    kind = "embedded"

    def __init__(self, worker_id: str, ttl_s: float = 10.0) -> None:
        self.worker_id = worker_id
        self.ttl_s = ttl_s
        self.draining = False
        self._calls: set[uuid.UUID] = set()

    @property
    def healthy(self) -> bool:
        return True

    def add(self, call_id: uuid.UUID) -> None:
        self._calls.add(call_id)

    def discard(self, call_id: uuid.UUID) -> None:
        self._calls.discard(call_id)

    async def holder(self, call_id: uuid.UUID) -> str | None:
        """The worker holding ``call_id`` live, None when no worker does."""
        return self.worker_id if call_id in self._calls else None

    async def check(self) -> bool:
        """Can the registry be reached now (readiness)."""
        return True

    async def start(self, db: Database, blobs: BlobStore) -> None:
        return None

    async def stop(self) -> None:
        self._calls.clear()


class RedisRegistry(CallRegistry):
    """Shared by every worker through Redis; see the module's docstring for the keys."""

    kind = "redis"

    def __init__(self, redis_url: str, worker_id: str, ttl_s: float = 10.0) -> None:
        super().__init__(worker_id, ttl_s)
        from redis.asyncio import Redis

        self._redis = Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S, decode_responses=True
        )
        self.beat_s = max(0.5, min(2.0, ttl_s / 4))
        self._ok_until = 0.0  # monotonic time until which the last heartbeat vouches for Redis
        self._down_since: float | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._db: Database | None = None
        self._blobs: BlobStore | None = None

    def _key(self, kind: str, name: object) -> str:
        return f"{PREFIX}:{kind}:{name}"

    @property
    def healthy(self) -> bool:
        return time.monotonic() < self._ok_until

    def add(self, call_id: uuid.UUID) -> None:
        super().add(call_id)
        self._spawn(self._redis.set(self._key("call", call_id), self.worker_id, px=int(self.ttl_s * 1000)))

    def discard(self, call_id: uuid.UUID) -> None:
        super().discard(call_id)
        self._spawn(self._redis.delete(self._key("call", call_id)))

    def _spawn(self, op: Any) -> None:
        """A registry write in the background: a call never waits for Redis (the heartbeat repeats it)."""

        async def run() -> None:
            try:
                await op
            except Exception as exc:
                self._failed(exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def holder(self, call_id: uuid.UUID) -> str | None:
        found = await self._redis.get(self._key("call", call_id))
        return str(found) if found is not None else None

    async def workers(self) -> dict[str, dict[str, Any]]:
        """Every live worker and what its heartbeat says (calls, draining)."""
        names = [str(n) for n in await self._redis.zrange(self._key("set", "workers"), 0, -1)]
        values = await self._redis.mget([self._key("worker", n) for n in names]) if names else []
        return {n: json.loads(v) for n, v in zip(names, values, strict=True) if v is not None}

    async def check(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), REDIS_TIMEOUT_S))
        except Exception:
            return False

    async def start(self, db: Database, blobs: BlobStore) -> None:
        """Register this worker (a first heartbeat, awaited) and keep beating."""
        self._db, self._blobs = db, blobs
        await self._beat_once()
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="call-registry-heartbeat")

    async def stop(self) -> None:
        """A clean exit: this worker leaves the registry (nobody will take it for lost)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            keys = [self._key("worker", self.worker_id), *(self._key("call", c) for c in self._calls)]
            async with self._redis.pipeline(transaction=True) as p:
                p.delete(*keys)
                p.zrem(self._key("set", "workers"), self.worker_id)
                await p.execute()
        except Exception as exc:
            log.warning("registry_leave_failed", error=type(exc).__name__)
        await super().stop()
        await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.beat_s if self.healthy else 0.5)
            await self._beat_once()

    async def _beat_once(self) -> None:
        try:
            await self._beat()
            await self._reap()
        except Exception as exc:  # Redis (or the database) failing must never stop the heartbeat
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._ok_until = 0.0
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("registry_unreachable", error=type(exc).__name__, live_calls=len(self._calls))

    async def _beat(self) -> None:
        ttl_ms, now = int(self.ttl_s * 1000), time.time()
        info = {"calls": len(self._calls), "draining": self.draining, "pid": os.getpid(), "at": round(now, 3)}
        async with self._redis.pipeline(transaction=True) as p:
            p.set(self._key("worker", self.worker_id), json.dumps(info), px=ttl_ms)
            p.zadd(self._key("set", "workers"), {self.worker_id: now})
            for call_id in list(self._calls):
                p.set(self._key("call", call_id), self.worker_id, px=ttl_ms)
            await p.execute()
        self._ok_until = time.monotonic() + max(2 * self.beat_s, 1.0) + REDIS_TIMEOUT_S
        if self._down_since is not None:
            log.warning("registry_back", down_s=round(time.monotonic() - self._down_since, 1))
            self._down_since = None

    async def _reap(self) -> None:
        """End the calls of every worker whose heartbeat expired (one reaper per dead worker)."""
        # a heartbeat older than the TTL (and a beat more: clocks differ, and its call keys have expired by then)
        cutoff = time.time() - self.ttl_s - self.beat_s
        stale = await self._redis.zrangebyscore(self._key("set", "workers"), "-inf", cutoff)
        for worker in map(str, stale):
            if worker == self.worker_id or await self._redis.exists(self._key("worker", worker)):
                continue
            if not await self._redis.set(self._key("reap", worker), self.worker_id, nx=True, px=30_000):
                continue  # another worker is on it
            ended = await self._end_lost(worker)
            await self._redis.zrem(self._key("set", "workers"), worker)
            log.warning("worker_lost", worker=worker, calls_ended=ended)

    async def _end_lost(self, worker: str) -> int:
        from parley.calls.recovery import recover_crashed_calls

        assert self._db is not None and self._blobs is not None  # set by start
        return await recover_crashed_calls(self._db, self._blobs, worker, reason=WORKER_LOST, exact=True)


def open_registry(redis_url: str | None, worker_id: str, ttl_s: float) -> CallRegistry:
    """Redis's registry when Redis is configured (no silent in-process fallback then), else the embedded one."""
    return RedisRegistry(redis_url, worker_id, ttl_s) if redis_url else CallRegistry(worker_id, ttl_s)

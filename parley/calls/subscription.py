"""One Redis pub/sub channel followed through Redis going away and coming back.

Pub/sub keeps nothing for a subscriber that was not connected, so what matters to a reader is *when* it may have
missed messages: every (re)subscription bumps :attr:`Subscription.generation` and queues a marker, and a reader
that sees one reads the database (the durable truth) to fill the gap. While Redis is unreachable
:attr:`Subscription.live` is false and the reader falls back to polling; one line is logged per outage (shared by
every subscription of a worker through :class:`Outage`), not one per stream and retry.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 1.0
HEALTH_CHECK_S = 2.0  # an idle subscription pings this often, so a dead connection is noticed while quiet
MAX_RETRY_S = 1.0  # a returning Redis is followed again within about this
MAX_QUEUED = 1000  # messages a slow reader may leave waiting; past it they are dropped (and a gap is marked)
#: the marker a reader finds in the queue after each (re)subscription and drop: read the database, something may
#: be missing
RESUBSCRIBED: dict[str, Any] = {"_resubscribed": True}


class Outage:
    """Redis unreachable for some part of this worker: logged once when it starts and once when it ends."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None

    def down(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.error("live_bus_unreachable", part=self.what, error=type(exc).__name__,
                      fallback="polling the database until Redis answers")  # fmt: skip

    def up(self) -> None:
        if self.since is not None:
            log.warning("live_bus_back", part=self.what, down_s=round(time.monotonic() - self.since, 1))
            self.since = None


class Subscription:
    """Messages (JSON objects) of ``channel``, in :attr:`queue`, for as long as it runs."""

    def __init__(self, redis_url: str, channel: str, outage: Outage) -> None:
        self.redis_url = redis_url
        self.channel = channel
        self.outage = outage
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=MAX_QUEUED)
        self.live = False
        self.generation = 0
        self._became_live = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Subscription:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"subscription-{self.channel}")
        return self

    async def ready(self, within_s: float) -> bool:
        """Wait (at most ``within_s``) for the first subscription; False when Redis did not answer in time (at
        once while Redis is known to be away: a new stream then starts by polling)."""
        if self.outage.since is not None:
            within_s = min(within_s, 0.05)
        try:
            await asyncio.wait_for(self._became_live.wait(), within_s)
        except TimeoutError:
            return False
        return True

    async def next(self, within_s: float) -> dict[str, Any] | None:
        """The next message, or None when none came within ``within_s``."""
        try:
            return await asyncio.wait_for(self.queue.get(), within_s)
        except TimeoutError:
            return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        wait = 0.1
        while True:
            generation = self.generation
            try:
                await self._follow()
            except Exception as exc:  # Redis gone, a cut connection: fall back, and try again shortly
                self.outage.down(exc)
            if self.generation != generation:
                wait = 0.1  # it had been following: the first retry is quick
            await asyncio.sleep(wait)
            wait = min(MAX_RETRY_S, wait * 2)

    async def _follow(self) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(
            self.redis_url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=CONNECT_TIMEOUT_S + HEALTH_CHECK_S,
            health_check_interval=HEALTH_CHECK_S,
            decode_responses=True,
        )
        pubsub = client.pubsub()
        try:
            await asyncio.wait_for(pubsub.subscribe(self.channel), CONNECT_TIMEOUT_S)
            while (await pubsub.get_message(timeout=CONNECT_TIMEOUT_S)) is None:
                pass  # the subscription's confirmation: from here on nothing published is missed
            self.generation += 1
            self.live = True
            self._became_live.set()
            self.outage.up()
            self._put(RESUBSCRIBED)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=HEALTH_CHECK_S)
                if message is not None and message.get("type") == "message":
                    self._put(_decoded(message.get("data")))
        finally:
            if self.live:  # a reader waiting for the next message learns at once that it must poll now
                self._put(RESUBSCRIBED)
            self.live = False
            try:
                await asyncio.wait_for(pubsub.aclose(), CONNECT_TIMEOUT_S)
                await asyncio.wait_for(client.aclose(), CONNECT_TIMEOUT_S)
            except Exception:  # closing a connection to a Redis that is gone: nothing to keep
                pass

    def _put(self, item: dict[str, Any] | None) -> None:
        if item is None:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:  # a reader that stopped reading: drop the oldest, and say a gap is possible
            self.queue.get_nowait()
            self.queue.put_nowait(RESUBSCRIBED)


def _decoded(data: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None

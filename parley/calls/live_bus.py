"""Live events and call control across workers, over Redis pub/sub (only with ``PARLEY_REDIS_URL``).

The database stays the durable truth; the bus only makes it arrive sooner:

- ``parley:live:call:<call id>``: every call event this worker commits (its database id, kind, data, time), and a
  ``status`` notice when a call's row ends; an event stream on any worker follows it (``api/live_stream.py``).
  Published from the session's ``after_commit`` (:func:`install`), so a message never names a row a reader
  cannot read yet, and from one task, in commit order; the call's writer never waits for Redis.
- ``parley:live:worker:<worker id>``: control for the calls a worker holds (an operator's hang-up), sent to the
  holder the registry names; ``calls.hangup_requested_at`` is still set first and still polled, less often while
  this worker's control subscription is live.

Redis unreachable: publishing drops (logged once per outage), readers poll the database as before.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from parley.calls.hangups import LIVE_CALLS
from parley.calls.subscription import CONNECT_TIMEOUT_S, RESUBSCRIBED, Outage, Subscription
from parley.store.calls import UNFINISHED
from parley.store.models import Call, CallEvent

log = structlog.get_logger(__name__)

PREFIX = "parley:live"
MAX_OUTBOX = 10_000  # messages waiting for Redis; past it they are dropped (readers read the database anyway)
_INFO_KEY = "parley_live_bus"
T = TypeVar("T")


def call_channel(call_id: uuid.UUID | str) -> str:
    return f"{PREFIX}:call:{call_id}"


def worker_channel(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


class LiveBus:
    """This worker's end of the bus: its publisher, its control subscription, and the streams' subscriptions."""

    def __init__(self, redis_url: str, worker_id: str, registry: Any) -> None:
        from redis.asyncio import Redis

        self.redis_url = redis_url
        self.worker_id = worker_id
        self.registry = registry  # parley.calls.registry.CallRegistry: holder(call_id)
        self._redis = Redis.from_url(
            redis_url, socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S, decode_responses=True
        )
        self.publishing = Outage("publish")
        self.following = Outage("subscribe")
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=MAX_OUTBOX)
        self.control = Subscription(redis_url, worker_channel(worker_id), Outage("control"))
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listening(self) -> bool:
        """This worker hears its control channel now (the hang-up poll may slow down)."""
        return self.control.live

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.control.start()
        self._tasks = [
            loop.create_task(self._publish_loop(), name="live-bus-publish"),
            loop.create_task(self._control_loop(), name="live-bus-control"),
        ]
        await self.control.ready(CONNECT_TIMEOUT_S)  # a Redis down at start-up: the polls serve until it answers

    async def stop(self) -> None:
        await self.control.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()

    def watch(self, call_id: uuid.UUID) -> Subscription:
        """A subscription to one call's events (an event stream's; close it when done)."""
        return Subscription(self.redis_url, call_channel(call_id), self.following).start()

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Queue ``message`` for Redis (never waits; dropped when Redis has been away too long)."""
        try:
            self._outbox.put_nowait((channel, json.dumps(message, separators=(",", ":"))))
        except asyncio.QueueFull:
            pass

    async def hang_up_elsewhere(self, call_id: uuid.UUID, within_s: float = 0.5) -> bool:
        """Tell the worker holding ``call_id`` to end it now; False when none heard (the flag's poll remains)."""
        try:
            return await asyncio.wait_for(self._send_hangup(call_id), within_s)
        except Exception as exc:
            self.publishing.down(exc)
            return False

    async def _send_hangup(self, call_id: uuid.UUID) -> bool:
        holder = await _once_more(lambda: self.registry.holder(call_id))
        if holder is None:
            return False
        message = json.dumps({"op": "hangup", "call_id": str(call_id)})
        return bool(await self._publish(worker_channel(holder), message))

    async def _publish(self, channel: str, data: str) -> int:
        return int(await _once_more(lambda: self._redis.publish(channel, data)))

    async def _publish_loop(self) -> None:
        while True:
            channel, data = await self._outbox.get()
            try:
                await self._publish(channel, data)
            except Exception as exc:  # the message is lost to pub/sub, not to readers: they read the database
                self.publishing.down(exc)
            else:
                self.publishing.up()

    async def _control_loop(self) -> None:
        while True:
            message = await self.control.queue.get()
            if message is RESUBSCRIBED:  # the channel was away: look at the flags now rather than at the next poll
                await LIVE_CALLS.check_flags()
            elif message.get("op") == "hangup":
                try:
                    call_id = uuid.UUID(str(message.get("call_id")))
                except ValueError:
                    continue
                LIVE_CALLS.hang_up(call_id)  # ignored unless it runs here


async def _once_more(op: Callable[[], Awaitable[T]]) -> T:
    """``op``, again on a fresh connection when a pooled one had died with a restarted Redis."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:
        return await op()
    except RedisConnectionError:
        return await op()


#: this process's bus, set by the worker's start (parley.calls.workers); None: embedded, or not serving
_BUS: LiveBus | None = None


def current() -> LiveBus | None:
    return _BUS


def install(bus: LiveBus | None) -> None:
    """Make ``bus`` the one committed events go to; the session hooks are registered once per process."""
    global _BUS
    _BUS = bus
    if not event.contains(Session, "after_flush", _collect):
        event.listen(Session, "after_flush", _collect)
        event.listen(Session, "after_commit", _send)
        event.listen(Session, "after_soft_rollback", _forget)


def _collect(session: Session, _context: Any) -> None:
    """What this flush wrote that a live view shows: new call events (ids assigned now), calls that ended."""
    if _BUS is None:
        return
    found: list[tuple[str, dict[str, Any]]] = []
    for obj in session.new:
        if isinstance(obj, CallEvent):
            found.append((call_channel(obj.call_id), _event_message(obj)))
    for obj in session.dirty:
        if isinstance(obj, Call) and obj.status not in UNFINISHED and inspect(obj).attrs.status.history.has_changes():
            found.append((call_channel(obj.id), {"status": obj.status}))
    if found:
        session.info.setdefault(_INFO_KEY, []).extend(found)


def _send(session: Session) -> None:
    pending = session.info.pop(_INFO_KEY, None)
    if pending and _BUS is not None:
        for channel, message in pending:
            _BUS.publish(channel, message)


def _forget(session: Session, _previous: Any) -> None:
    session.info.pop(_INFO_KEY, None)


def _event_message(e: CallEvent) -> dict[str, Any]:
    """The event as a stream sends it (``EventOut``'s fields) with its id."""
    created = e.created_at.isoformat() if e.created_at is not None else None
    return {"id": e.id, "t": e.t, "kind": e.kind, "data": e.data, "created_at": created}

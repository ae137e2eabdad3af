"""A call's event stream (``GET /v1/calls/{id}/events/stream``): the backlog from the database, then what is new.

Embedded (no Redis) the new events come from polling the database every :data:`POLL_S`. With Redis the stream
subscribes to the call's channel (:mod:`parley.calls.live_bus`) *before* reading the backlog, so nothing written
in between is missed, then sends each event as its worker commits it. Duplicates (an event both read and
received) are dropped by id; every (re)subscription, a ``status`` notice (the call ended) and a slow safety
round read the database again, which fills any gap pub/sub left. While the subscription is down the stream polls
as it does embedded, and follows the channel again once Redis is back; the stream itself never drops for it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from sqlalchemy import select

from parley.api.schemas import EventOut
from parley.calls.subscription import Subscription
from parley.store.calls import UNFINISHED
from parley.store.db import Database
from parley.store.models import Call, CallEvent

POLL_S = 0.5  # how often a stream without a live subscription looks for new events
SAFETY_S = 5.0  # how often a stream following pub/sub reads the database anyway (a lost message, a deleted call)
SUBSCRIBE_WAIT_S = 1.0  # how long a stream waits for its subscription before it starts by polling
KEEPALIVE_S = 15.0  # a comment this often keeps proxies from closing a quiet stream
MAX_STREAM_S = 4 * 3600  # then the stream closes (without ``end``): a client reconnects if it still cares
PAGE = 500  # events per query: a long call's history is sent in pages
_SENT_KEPT = 4096  # ids remembered for de-duplication (a live message only ever repeats a recent one)

Status = tuple[str, str | None] | None


class _Sent:
    """Which event ids this stream has sent (or the client had, by ``Last-Event-ID``)."""

    def __init__(self, after: int) -> None:
        self.floor = after  # the client has everything up to here
        self.last = after  # the highest id sent: the next database read starts after it
        self._ids: dict[int, None] = {}

    def first_time(self, event_id: int) -> bool:
        if event_id <= self.floor or event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > _SENT_KEPT:
            oldest = next(iter(self._ids))
            del self._ids[oldest]
            self.floor = max(self.floor, min(oldest, self.last))
        self.last = max(self.last, event_id)
        return True


async def stream(
    db: Database,
    tenant_id: uuid.UUID,
    call_id: uuid.UUID,
    request: Request,
    after: int,
    watch: Subscription | None,
) -> AsyncIterator[str]:
    """The stream's messages until the call has ended and all its events are out (or MAX_STREAM_S)."""
    sent = _Sent(after)
    if watch is not None:
        await watch.ready(SUBSCRIBE_WAIT_S)
    started = last_out = last_read = time.monotonic()
    read = True
    while time.monotonic() - started < MAX_STREAM_S:
        if read:
            # the call's state first: events written before it ended are then all in the query that follows
            status, events = await _read(db, tenant_id, call_id, sent.last)
            last_read = time.monotonic()
            for e in events:
                if sent.first_time(e.id):
                    yield message(e.kind, EventOut.model_validate(e).model_dump(mode="json"), e.id)
                    last_out = time.monotonic()
            if len(events) == PAGE:
                continue  # more are waiting
            if status is None or status[0] not in UNFINISHED:
                yield _ended(status)
                return
        read, out = await _wait(watch, sent, last_read)
        for chunk in out:
            yield chunk
            last_out = time.monotonic()
        if time.monotonic() - last_out >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_out = time.monotonic()
        if await request.is_disconnected():
            return


async def _wait(watch: Subscription | None, sent: _Sent, last_read: float) -> tuple[bool, list[str]]:
    """Until there is something to do: (read the database next?, messages to send now)."""
    if watch is None or not watch.live:
        await asyncio.sleep(POLL_S)
        return True, []
    item = await watch.next(min(POLL_S * 2, SAFETY_S))
    if item is None:
        return time.monotonic() - last_read >= SAFETY_S, []
    out: list[str] = []
    read = False
    while item is not None:
        if "id" in item:
            chunk = _live_event(item, sent)
            if chunk:
                out.append(chunk)
        else:  # a (re)subscription (a gap is possible) or the call's end: the database says what is true
            read = True
        item = watch.queue.get_nowait() if not watch.queue.empty() else None
    return read, out


def _ended(status: Status) -> str:
    """The last message: how the call ended (``deleted`` when its record is gone)."""
    return message("end", {"status": status[0] if status else "deleted", "end_reason": status[1] if status else None})


def _live_event(item: dict[str, Any], sent: _Sent) -> str | None:
    """The SSE message of an event received from the bus, None when already sent (or not an event)."""
    try:
        event_id = int(item["id"])
        event = EventOut.model_validate(item).model_dump(mode="json")
    except (KeyError, TypeError, ValueError):
        return None
    if not sent.first_time(event_id):
        return None
    return message(event["kind"], event, event_id)


async def _read(db: Database, tenant_id: uuid.UUID, call_id: uuid.UUID, after: int) -> tuple[Status, list[CallEvent]]:
    """The call's (status, end reason), None once deleted; then up to PAGE of its events after id ``after``."""
    async with db.session() as s:
        row = (
            await s.execute(select(Call.status, Call.end_reason).where(Call.tenant_id == tenant_id, Call.id == call_id))
        ).first()
        events = await s.scalars(
            select(CallEvent)
            .where(CallEvent.tenant_id == tenant_id, CallEvent.call_id == call_id, CallEvent.id > after)
            .order_by(CallEvent.id)
            .limit(PAGE)
        )
        return (None if row is None else (row[0], row[1])), list(events)


def message(kind: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One SSE message; the kind is kept to one line (a newline in it would start a new field)."""
    name = " ".join(kind.split()) or "event"
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

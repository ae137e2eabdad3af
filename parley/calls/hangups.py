"""An operator ends a live call (``POST /v1/calls/{id}/hangup``), whichever worker runs it.

Every transport's call runs through :class:`~parley.calls.live.LiveCall`, which registers here while it runs.
The API sets ``calls.hangup_requested_at``; the worker that got the request ends the call at once if it runs it
here, and every worker polls that flag for its own live calls (about once a second, only while it has some), so
a call on another worker ends within about a second too. With Redis the API also tells the holding worker over
the bus (:mod:`parley.calls.live_bus`), which ends the call at once; the flag stays the durable truth, and its
poll slows to :data:`QUIET_POLL_S` while this worker's control channel is live (a lost message costs seconds).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from sqlalchemy import select

from parley.calls.control import ActionUnsupported
from parley.calls.line import CallLine
from parley.calls.record_writer import CallStore
from parley.store.db import Database
from parley.store.models import Call

log = structlog.get_logger(__name__)

#: the end reason of a call an operator ended
OPERATOR_HANGUP = "hung_up_by_operator"
POLL_S = 1.0
QUIET_POLL_S = 5.0  # the poll while the bus brings hang-ups at once (a fallback only)
_MAX_IDS = 500  # ids per poll query: a worker's live calls, in chunks the database takes in one IN list


class LiveCall(Protocol):
    """What ending a call needs of :class:`parley.calls.live.LiveCall` (which imports this module)."""

    call_id: uuid.UUID | None
    store: CallStore
    line: CallLine

    def now(self) -> float: ...

    def record_event(self, event: dict[str, Any]) -> None: ...

    async def end(self, reason: str) -> None: ...


class Holder(Protocol):
    """The call registry (:mod:`parley.calls.registry`): told of every call this process starts and ends."""

    def add(self, call_id: uuid.UUID) -> None: ...

    def discard(self, call_id: uuid.UUID) -> None: ...


class LiveCalls:
    """This process's live calls by id, and per database the task that polls their hang-up flags."""

    def __init__(self) -> None:
        self.registry: Holder | None = None  # set by the app's lifespan: which worker holds which call
        self.bus_live: Callable[[], bool] = lambda: False  # hang-ups arrive over the bus now (set by the lifespan)
        self._calls: dict[uuid.UUID, LiveCall] = {}
        self._ending: set[uuid.UUID] = set()
        self._pollers: dict[tuple[int, int], asyncio.Task[None]] = {}  # by (event loop, database)
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, call: LiveCall) -> None:
        """``call`` runs here from now on (its record exists: it has an id)."""
        assert call.call_id is not None
        self._calls[call.call_id] = call
        if self.registry is not None:
            self.registry.add(call.call_id)
        db, loop = call.store.db, asyncio.get_running_loop()
        poller = self._pollers.get((id(loop), id(db)))
        if poller is None or poller.done():
            self._pollers[(id(loop), id(db))] = loop.create_task(self._poll(db), name="call-hangup-poll")

    def discard(self, call: LiveCall) -> None:
        """``call`` has ended (its poller stops at its next round when it was the last)."""
        if call.call_id is not None and self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
            self._ending.discard(call.call_id)
            if self.registry is not None:
                self.registry.discard(call.call_id)

    def __len__(self) -> int:
        return len(self._calls)

    def end_all(self, reason: str) -> int:
        """End every live call with ``reason`` and a clean hang-up of its transport (drain); how many."""
        ending = [i for i in self._calls if i not in self._ending]
        for call_id in ending:
            self.hang_up(call_id, reason, by="worker")
        return len(ending)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def hang_up(self, call_id: uuid.UUID, reason: str = OPERATOR_HANGUP, by: str = "operator") -> bool:
        """End the call if it runs here (in the background: the caller need not wait); False if it does not."""
        call = self._calls.get(call_id)
        if call is None:
            return False
        if call_id not in self._ending:
            self._ending.add(call_id)
            task = asyncio.get_running_loop().create_task(_end(call, reason, by), name=f"call-hangup-{call_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def check_flags(self) -> None:
        """A poll round now, for every database (the bus was away: a hang-up sent meanwhile was lost)."""
        for db in {id(c.store.db): c.store.db for c in self._calls.values()}.values():
            await self._check(db)

    async def _check(self, db: Database) -> bool:
        """End this process's calls in ``db`` that are flagged for hang-up; False when it runs none there."""
        ids = [i for i, c in self._calls.items() if c.store.db is db]
        waiting = [i for i in ids if i not in self._ending]
        for k in range(0, len(waiting), _MAX_IDS):
            for call_id in await _flagged(db, waiting[k : k + _MAX_IDS]):
                self.hang_up(call_id)
        return bool(ids)

    async def _poll(self, db: Database) -> None:
        """While this process runs calls recorded in ``db``: end the ones flagged for hang-up."""
        try:
            while True:
                await asyncio.sleep(QUIET_POLL_S if self.bus_live() else POLL_S)
                if not await self._check(db):
                    return
        finally:
            key = (id(asyncio.get_running_loop()), id(db))
            if self._pollers.get(key) is asyncio.current_task():
                del self._pollers[key]


async def _flagged(db: Database, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Which of ``ids`` an operator asked to end; none when the database cannot answer (the next round asks again)."""
    try:
        async with db.session() as s:
            rows = await s.scalars(select(Call.id).where(Call.id.in_(ids), Call.hangup_requested_at.is_not(None)))
            return list(rows)
    except Exception as exc:  # a database hiccup must not stop the poller: calls would become unstoppable
        log.warning("hangup_poll_failed", error=repr(exc))
        return []


async def _end(call: LiveCall, reason: str = OPERATOR_HANGUP, by: str = "operator") -> None:
    """Record who ended the call, end it, then let the transport end its side (a BYE, a carrier's hang-up)."""
    log.info("call_hung_up", call_id=str(call.call_id), by=by, reason=reason)
    call.record_event({"type": "hangup", "by": by, "t": round(call.now(), 3)})
    await call.end(reason)
    try:
        await call.line.control.hang_up(reason)
    except ActionUnsupported:
        pass
    except Exception:
        log.exception("operator_hangup_transport_failed", call_id=str(call.call_id))


#: the calls this process runs
LIVE_CALLS = LiveCalls()

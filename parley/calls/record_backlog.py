"""A live call's database writes, kept through a database outage and written, in order, when it returns.

A call's record (turns, events, its end with the recording's metadata) is written as the call goes. While the
database answers, each write happens at once, exactly as before. When a write fails for a reason that passes
(the server went away, a connection was cut, a failover), the write is kept in this call's backlog and every
later write of the call queues behind it, so the order holds; one task per call retries the oldest with backoff
until the database is back. Nothing of the call waits on it meanwhile: the media never touches the database,
and events still reach the client at once. Memory is bounded per call (:data:`MAX_ITEMS`; past it turns and
events are dropped and counted, the call's end is always kept). Shutdown (:func:`flush_pending`, from the drain)
gives the backlogs a last chance and says what was lost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.db import Database
from parley.store.outage import transient

log = structlog.get_logger(__name__)

Write = Callable[[AsyncSession], Awaitable[None]]

#: turns and events one call may hold while the database is away (an hour of a busy call is a few thousand)
MAX_ITEMS = 20_000
FIRST_RETRY_S, MAX_RETRY_S = 0.25, 5.0
_REPORT_EVERY_S = 30.0  # a long outage: one log line per call this often, not one per retry


@dataclass
class _Job:
    write: Write
    items: int
    after: Callable[[], None] | None


class RecordBacklog:
    """One call's writes: at once while the database answers, kept in order and retried while it does not."""

    def __init__(self, db: Database, call_id: uuid.UUID, limit: int = MAX_ITEMS) -> None:
        self.db = db
        self.call_id = call_id
        self.limit = limit
        self.dropped = 0  # items refused because the backlog was full
        self._jobs: deque[_Job] = deque()
        self._held = 0
        self._task: asyncio.Task[None] | None = None
        self._since = 0.0  # when the outage began (monotonic)

    def __len__(self) -> int:
        return len(self._jobs)

    async def submit(self, write: Write, items: int = 1, after: Callable[[], None] | None = None, *,
                     essential: bool = False) -> bool:  # fmt: skip
        """Write now, or keep ``write`` behind the writes still waiting; ``after`` runs once it is written.
        False when it was not kept: a write the database refused for good (logged), or a full backlog
        (``essential`` writes, the call's end, are kept regardless)."""
        if not self._jobs:
            try:
                await self._run(write)
            except Exception as exc:
                if not transient(exc):
                    log.exception("call_record_write_failed", call_id=str(self.call_id), items=items)
                    return False
                self._since = time.monotonic()
                log.warning("call_record_db_unavailable", call_id=str(self.call_id), error=repr(exc),
                            action="kept in memory, retried until the database answers")  # fmt: skip
            else:
                if after is not None:
                    after()
                return True
        if not essential and self._held + items > self.limit:
            if not self.dropped:
                log.error("call_record_backlog_full", call_id=str(self.call_id), limit=self.limit)
            self.dropped += items
            return False
        self._jobs.append(_Job(write, items, after))
        self._held += items
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._retry(), name=f"call-record-retry-{self.call_id}")
            PENDING.add(self)
        return True

    async def _run(self, write: Write) -> None:
        async with self.db.session() as s:
            await write(s)

    async def _retry(self) -> None:
        """Writes the oldest job until none is left, waiting longer after each failure (up to MAX_RETRY_S)."""
        wait, reported, written = FIRST_RETRY_S, time.monotonic(), 0
        try:
            while self._jobs:
                job = self._jobs[0]
                try:
                    await self._run(job.write)
                except Exception as exc:
                    if transient(exc):
                        if time.monotonic() - reported > _REPORT_EVERY_S:
                            reported = time.monotonic()
                            log.warning("call_record_db_still_unavailable", call_id=str(self.call_id),
                                        waiting=self._held, seconds=round(reported - self._since, 1))  # fmt: skip
                        await asyncio.sleep(wait)
                        wait = min(MAX_RETRY_S, wait * 2)
                        continue
                    log.exception("call_record_write_failed", call_id=str(self.call_id), items=job.items)
                else:
                    written += job.items
                    if job.after is not None:
                        job.after()
                self._jobs.popleft()
                self._held -= job.items
                wait = FIRST_RETRY_S
            log.warning("call_record_db_back", call_id=str(self.call_id), written=written,
                        seconds=round(time.monotonic() - self._since, 1), dropped=self.dropped)  # fmt: skip
        finally:
            PENDING.discard(self)

    async def flushed(self, within_s: float) -> bool:
        """True once nothing waits (within ``within_s`` seconds)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=within_s)
        return not self._jobs


#: the backlogs of this process that still hold writes (their retry task runs)
PENDING: set[RecordBacklog] = set()


async def flush_pending(within_s: float) -> int:
    """At shutdown: wait up to ``within_s`` seconds for every backlog to be written; how many calls' writes are left
    (logged as lost: the process is about to exit)."""
    deadline = time.monotonic() + within_s
    for backlog in list(PENDING):
        await backlog.flushed(max(0.0, deadline - time.monotonic()))
    left = [b for b in PENDING if len(b)]
    if left:
        log.error("call_records_lost_at_shutdown", calls=len(left), call_ids=[str(b.call_id) for b in left][:50],
                  reason="the database did not come back before the shutdown deadline")  # fmt: skip
    return len(left)

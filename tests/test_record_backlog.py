"""The call record's backlog (parley.calls.record_backlog) on its own: writes at once while the database answers;
kept in order, bounded, and written when it returns; a bad write dropped, not retried; what shutdown leaves.
(tests/test_db_outage.py is the same with a real PostgreSQL cut mid-call.)"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError

from parley.calls import record_backlog
from parley.calls.record_backlog import PENDING, RecordBacklog, flush_pending
from parley.store.db import Database


class Outage:
    """Writes that fail as a lost database does while ``down``, and note what got through, in order."""

    def __init__(self) -> None:
        self.down = False
        self.written: list[int] = []

    def write(self, n: int) -> Any:
        async def run(_session: Any) -> None:
            if self.down:
                raise OperationalError("INSERT", {}, ConnectionRefusedError(111, "refused"))
            self.written.append(n)

        return run


def _run(tmp_path: Path, scenario: Any) -> Any:
    async def main() -> Any:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
        try:
            return await scenario(db)
        finally:
            await db.close()

    return asyncio.run(main())


def test_writes_wait_in_order_and_land_when_the_database_returns(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(record_backlog, "FIRST_RETRY_S", 0.01)
    outage, after = Outage(), list[int]()

    async def scenario(db: Database) -> None:
        backlog = RecordBacklog(db, uuid.uuid4())
        assert await backlog.submit(outage.write(1)) and outage.written == [1]  # at once: nothing waits
        outage.down = True
        for n in (2, 3, 4):
            assert await backlog.submit(outage.write(n), after=partial(after.append, n))
        assert len(backlog) == 3 and backlog in PENDING and outage.written == [1]
        await asyncio.sleep(0.1)  # retried meanwhile, still down
        outage.down = False
        assert await backlog.submit(outage.write(5))  # queued behind the others, not written first
        assert await backlog.flushed(5)
        assert outage.written == [1, 2, 3, 4, 5] and after == [2, 3, 4] and backlog not in PENDING

    _run(tmp_path, scenario)


def test_bounded_memory_keeps_the_end(tmp_path: Path) -> None:
    outage = Outage()
    outage.down = True

    async def scenario(db: Database) -> None:
        backlog = RecordBacklog(db, uuid.uuid4(), limit=3)
        kept = [await backlog.submit(outage.write(n), items=1) for n in range(5)]
        assert kept == [True, True, True, False, False] and backlog.dropped == 2
        assert await backlog.submit(outage.write(99), essential=True)  # the call's end is never dropped
        assert len(backlog) == 4
        assert await flush_pending(0.2) == 1  # shutdown with the database still away: said, not hidden
        outage.down = False
        assert await backlog.flushed(10) and outage.written == [0, 1, 2, 99]

    _run(tmp_path, scenario)


def test_a_bad_write_is_dropped_not_retried(tmp_path: Path) -> None:
    async def bad(_session: Any) -> None:
        raise IntegrityError("INSERT", {}, Exception("violates foreign key constraint"))

    async def scenario(db: Database) -> None:
        backlog = RecordBacklog(db, uuid.uuid4())
        assert not await backlog.submit(bad) and len(backlog) == 0

    _run(tmp_path, scenario)

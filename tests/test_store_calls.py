"""Store: call records (turns, events, filters, search, clean-up) on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.errors import NotFound
from parley.store.models import Call, CallEvent, Turn
from tests.support.store import db, new_tenant

__all__ = ["db"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def make_call(db: Database, tenant: uuid.UUID, agent: uuid.UUID | None = None, transport: str = "talk") -> Call:
    async with db.session() as s:
        return await CallRepo(s).create(tenant, agent or uuid.uuid4(), 1, "reception", transport, caller="+15550100")


async def add_turn(db: Database, tenant: uuid.UUID, call: uuid.UUID, turn: int, caller: str, agent: str) -> None:
    async with db.session() as s:
        await CallRepo(s).upsert_turn(tenant, call, turn, caller, agent, agent, False, {"stt": 0.1}, 0.5)


async def test_call_lifecycle(db: Database) -> None:
    a = await new_tenant(db)
    call = await make_call(db, a)
    assert call.status == "active" and call.started_at.tzinfo is not None
    await add_turn(db, a, call.id, 0, "hello", "Hi,")
    async with db.session() as s:
        repo = CallRepo(s)
        # The same turn again replaces it (turns are rewritten as they progress).
        await repo.upsert_turn(a, call.id, 0, "hello there", "Hi, how can I help?", "Hi, how can I help you today?",
                               True, {"stt": 0.12, "llm": 0.2}, 0.48)  # fmt: skip
        await repo.upsert_turn(a, call.id, 1, "book a table", "Sure.", "Sure.", False, {}, None)
        await repo.add_event(a, call.id, 1.5, "barge_in", {"turn": 0})
        await repo.add_event(a, call.id, 0.2, "start", {})
    async with db.session() as s:
        repo = CallRepo(s)
        turns = await repo.turns(a, call.id)
        assert [t.turn for t in turns] == [0, 1]
        t0 = turns[0]
        assert t0.caller_text == "hello there" and t0.agent_text == "Hi, how can I help?"
        assert t0.agent_text_generated == "Hi, how can I help you today?" and t0.interrupted is True
        assert t0.times == {"stt": 0.12, "llm": 0.2} and t0.voice_to_voice == 0.48
        assert turns[1].voice_to_voice is None
        assert [(e.t, e.kind, e.data) for e in await repo.events(a, call.id)] == [
            (0.2, "start", {}),
            (1.5, "barge_in", {"turn": 0}),
        ]
        ended = await repo.end(a, call.id, "ended", "caller-hung-up", 12.5, "rec/x.wav", 4096)
        assert ended is not None
        with pytest.raises(ValueError):
            await repo.end(a, call.id, "weird", None, None)
    async with db.session() as s:
        got = await CallRepo(s).get(a, call.id)
        assert got is not None and got.status == "ended" and got.end_reason == "caller-hung-up"
        assert got.duration_s == 12.5 and got.recording_key == "rec/x.wav" and got.recording_bytes == 4096
        assert got.ended_at is not None and got.ended_at >= got.started_at


async def test_delete_cascades(db: Database) -> None:
    a = await new_tenant(db)
    call = await make_call(db, a)
    await add_turn(db, a, call.id, 0, "hi", "hello")
    async with db.session() as s:
        await CallRepo(s).add_event(a, call.id, 0.0, "start", {})
    async with db.session() as s:
        deleted = await CallRepo(s).delete(a, call.id)
        assert deleted is not None and deleted.id == call.id and deleted.agent_name == "reception"
    async with db.session() as s:
        repo = CallRepo(s)
        assert await repo.get(a, call.id) is None and await repo.delete(a, call.id) is None
        for model in (Turn, CallEvent):
            n = await s.scalar(select(func.count()).select_from(model).where(model.call_id == call.id))
            assert n == 0, model.__name__


async def test_end_stale(db: Database) -> None:
    a, b = await new_tenant(db), await new_tenant(db)
    live_a, live_b, done = await make_call(db, a), await make_call(db, b), await make_call(db, a)
    async with db.session() as s:
        await CallRepo(s).end(a, done.id, "failed", "stt-error", 1.0)
    async with db.session() as s:
        assert await CallRepo(s).end_stale() >= 2
    async with db.session() as s:
        repo = CallRepo(s)
        for tenant, call in ((a, live_a), (b, live_b)):
            got = await repo.get(tenant, call.id)
            assert got is not None and got.status == "ended" and got.end_reason == "server-restart"
            assert got.ended_at is not None and got.duration_s is not None and got.duration_s >= 0
        kept = await repo.get(a, done.id)
        assert kept is not None and kept.status == "failed" and kept.end_reason == "stt-error"
        assert await repo.end_stale() == 0


async def test_list_filters(db: Database) -> None:
    a, b = await new_tenant(db), await new_tenant(db)
    agent1, agent2 = uuid.uuid4(), uuid.uuid4()
    c1 = await make_call(db, a, agent1, "talk")
    c2 = await make_call(db, a, agent2, "twilio")
    c3 = await make_call(db, a, agent1, "sip")
    other = await make_call(db, b, agent1, "talk")
    base = datetime(2030, 1, 1, tzinfo=UTC)
    async with db.session() as s:
        for i, c in enumerate((c1, c2, c3, other)):
            await s.execute(update(Call).where(Call.id == c.id).values(started_at=base + timedelta(hours=i)))
        await CallRepo(s).end(a, c2.id, "ended", "done", 3.0)
    await add_turn(db, a, c1.id, 0, "My discount is 100% off", "Great")
    await add_turn(db, a, c2.id, 0, "I want 1000 widgets", "OK")
    await add_turn(db, a, c3.id, 0, "hello", "Welcome to ACME_Corp")
    await add_turn(db, b, other.id, 0, "secret 100% words from acme", "acme_corp")

    async def ids(**kw: object) -> list[uuid.UUID]:
        async with db.session() as s:
            return [c.id for c in await CallRepo(s).list(a, **kw)]  # type: ignore[arg-type]

    assert await ids() == [c3.id, c2.id, c1.id]  # newest first
    assert await ids(limit=1, offset=1) == [c2.id]
    assert await ids(agent_id=agent1) == [c3.id, c1.id]
    assert await ids(status="ended") == [c2.id]
    assert await ids(status="active") == [c3.id, c1.id]
    assert await ids(transport="twilio") == [c2.id]
    assert await ids(since=base + timedelta(hours=1)) == [c3.id, c2.id]
    assert await ids(until=base + timedelta(hours=1)) == [c1.id]
    assert await ids(since=base, until=base + timedelta(hours=2), agent_id=agent1) == [c1.id]
    # Text search: case-insensitive, over caller and agent text, % and _ taken literally.
    assert await ids(q="DISCOUNT") == [c1.id]
    assert await ids(q="100%") == [c1.id]  # "1000 widgets" must not match
    assert await ids(q="welcome") == [c3.id]
    assert await ids(q="acme_corp") == [c3.id]
    assert await ids(q="acme corp") == []  # _ is not a wildcard
    assert await ids(q="secret") == []  # tenant B's words never match A's calls
    assert await ids(q="%") == [c1.id]
    async with db.session() as s:
        assert [c.id for c in await CallRepo(s).list(b, q="100%")] == [other.id]


async def test_calls_tenant_isolation(db: Database) -> None:
    a, b = await new_tenant(db), await new_tenant(db)
    call = await make_call(db, a)
    await add_turn(db, a, call.id, 0, "private words", "reply")
    async with db.session() as s:
        await CallRepo(s).add_event(a, call.id, 0.0, "start", {})
    async with db.session() as s:
        repo = CallRepo(s)
        assert await repo.get(b, call.id) is None
        assert await repo.list(b) == []
        assert await repo.list(b, q="private") == []
        assert await repo.turns(b, call.id) == []
        assert await repo.events(b, call.id) == []
        assert await repo.end(b, call.id, "failed", "hijack", 0.0) is None
        assert await repo.delete(b, call.id) is None
        with pytest.raises(NotFound):
            await repo.upsert_turn(b, call.id, 0, "overwrite", "x", "x", False, {}, None)
        with pytest.raises(NotFound):
            await repo.add_event(b, call.id, 1.0, "evil", {})
    async with db.session() as s:
        repo = CallRepo(s)
        got = await repo.get(a, call.id)
        assert got is not None and got.status == "active"
        turns = await repo.turns(a, call.id)
        assert [t.caller_text for t in turns] == ["private words"]
        assert [e.kind for e in await repo.events(a, call.id)] == ["start"]

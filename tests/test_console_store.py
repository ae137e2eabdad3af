"""Store: the console's analytics (days in any time zone, exact sums, percentiles) and talk drafts (kept for one
token, taken once, pruned when expired, bound to their tenant), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import select, update

from parley.store.agents import AgentRepo
from parley.store.analytics import AnalyticsRepo
from parley.store.calls import CallRepo, CallStatus
from parley.store.db import Database
from parley.store.models import Call, TalkDraft
from parley.store.talk_drafts import TalkDraftRepo
from tests.support.store import db, new_tenant

__all__ = ["db"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def call_at(db: Database, tenant: uuid.UUID, agent: uuid.UUID, at: datetime, v2v: list[float],
                  transport: str = "talk", interrupted: int = 0) -> uuid.UUID:  # fmt: skip
    """An ended call that started at ``at``, lasting 90 s, one turn per voice-to-voice value."""
    async with db.session() as s:
        repo = CallRepo(s)
        call = await repo.create(tenant, agent, 1, "reception", transport)
        for i, value in enumerate(v2v):
            await repo.upsert_turn(tenant, call.id, i, "q", "a", "a", i < interrupted, {}, value)
        await repo.end(tenant, call.id, CallStatus.ENDED, "caller-hangup", 90.0)
        await s.execute(update(Call).where(Call.id == call.id).values(started_at=at))
        return call.id


async def test_days_follow_the_time_zone_and_sums_are_exact(db: Database) -> None:
    tenant, agent = await new_tenant(db), uuid.uuid4()
    # 23:30 UTC on 1 March: 2 March in Asia/Kolkata (+05:30), still 1 March in UTC and New York
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    await call_at(db, tenant, agent, late, [0.5, 0.7, 0.9], interrupted=1)
    await call_at(db, tenant, agent, datetime(2026, 3, 2, 12, 0, tzinfo=UTC), [1.1], transport="twilio")
    await call_at(db, tenant, uuid.uuid4(), datetime(2026, 3, 2, 12, 0, tzinfo=UTC), [9.0])  # another agent
    since, until = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    async with db.session() as s:
        utc = await AnalyticsRepo(s).figures(tenant, since, until, ZoneInfo("UTC"), agent)
        india = await AnalyticsRepo(s).figures(tenant, since, until, ZoneInfo("Asia/Kolkata"), agent)
        everyone = await AnalyticsRepo(s).figures(tenant, since, until, ZoneInfo("UTC"), None)
    assert [(d, f.calls) for d, f in utc.days] == [(date(2026, 3, 1), 1), (date(2026, 3, 2), 1)]
    assert [(d, f.calls) for d, f in india.days] == [(date(2026, 3, 1), 0), (date(2026, 3, 2), 2),
                                                     (date(2026, 3, 3), 0)]  # fmt: skip
    totals = utc.totals.out()
    values = [0.5, 0.7, 0.9, 1.1]
    assert totals["calls"] == 2 and totals["minutes"] == 3.0 and totals["turns"] == 4
    assert totals["v2v_avg"] == pytest.approx(np.mean(values)) and totals["interruption_rate"] == 0.25
    assert totals["v2v_p50"] == pytest.approx(np.percentile(values, 50))
    assert totals["v2v_p95"] == pytest.approx(np.percentile(values, 95))
    assert utc.transports == {"talk": 1, "twilio": 1} and utc.end_reasons == {"caller-hangup": 2}
    assert utc.days[0][1].out()["v2v_p50"] == pytest.approx(0.7)
    assert everyone.totals.calls == 3
    async with db.session() as s:
        other = await AnalyticsRepo(s).figures(await new_tenant(db), since, until, ZoneInfo("UTC"), None)
    assert other.totals.calls == 0 and other.totals.out()["v2v_avg"] is None


async def test_a_draft_is_taken_once_by_its_own_token_and_tenant(db: Database) -> None:
    tenant, stranger = await new_tenant(db), await new_tenant(db)
    async with db.session() as s:
        agent = await AgentRepo(s).create(tenant, "drafted", {"name": "drafted"})
    soon = datetime.now(UTC) + timedelta(minutes=1)
    async with db.session() as s:
        await TalkDraftRepo(s).keep(tenant, agent.id, "token-1", 1, {"greeting": "draft"}, soon)
        await TalkDraftRepo(s).keep(tenant, agent.id, "token-old", 1, {}, datetime.now(UTC) - timedelta(seconds=1))
    async with db.session() as s:
        repo = TalkDraftRepo(s)
        assert await repo.take(stranger, agent.id, "token-1") is None
        assert await repo.take(tenant, uuid.uuid4(), "token-1") is None
        assert await repo.take(tenant, agent.id, "token-old") is None  # expired
        taken = await repo.take(tenant, agent.id, "token-1")
        assert taken is not None and taken.document == {"greeting": "draft"} and taken.based_on_version == 1
    async with db.session() as s:
        assert await TalkDraftRepo(s).take(tenant, agent.id, "token-1") is None  # once
        await TalkDraftRepo(s).keep(tenant, agent.id, "token-2", 1, {}, soon)  # prunes the expired one
    async with db.session() as s:
        left = set(await s.scalars(select(TalkDraft.token_id).where(TalkDraft.tenant_id == tenant)))
        assert left == {"token-2"}
        await AgentRepo(s).delete(tenant, agent.id)
    async with db.session() as s:  # an agent's drafts go with it
        assert list(await s.scalars(select(TalkDraft.token_id).where(TalkDraft.tenant_id == tenant))) == []

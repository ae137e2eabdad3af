"""Which of a tenant's calls a list, a count or an export takes: one filter, so all three agree.

The export reads every matching call in pages by keyset (``started_at`` then ``id``), never by offset: a page
costs the same at call 100,000 as at call 1, and calls that start meanwhile do not shift the pages.
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Call, Turn


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards taken literally (escape character: backslash)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class CallFilter:
    """What ``GET /v1/calls`` and its export filter on; None: any. ``since`` inclusive, ``until`` exclusive (on
    ``started_at``); ``q`` finds calls whose turns hold the text, case-insensitively; the duration bounds are
    inclusive and leave out calls without a duration (still running)."""

    agent_id: uuid.UUID | None = None
    agent_version: int | None = None
    status: str | None = None
    transport: str | None = None
    direction: str | None = None
    end_reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    q: str | None = None
    analysis_success: bool | None = None

    def where(self, stmt: Select[Any], tenant_id: uuid.UUID) -> Select[Any]:
        """``stmt`` (a select over calls) narrowed to the tenant's calls that match."""
        stmt = stmt.where(Call.tenant_id == tenant_id)
        equal = {
            Call.agent_id: self.agent_id,
            Call.agent_version: self.agent_version,
            Call.status: self.status,
            Call.transport: self.transport,
            Call.direction: self.direction,
            Call.end_reason: self.end_reason,
        }
        for column, value in equal.items():
            if value is not None:
                stmt = stmt.where(column == value)
        if self.since is not None:
            stmt = stmt.where(Call.started_at >= self.since)
        if self.until is not None:
            stmt = stmt.where(Call.started_at < self.until)
        if self.min_duration_s is not None:
            stmt = stmt.where(Call.duration_s >= self.min_duration_s)
        if self.max_duration_s is not None:
            stmt = stmt.where(Call.duration_s <= self.max_duration_s)
        if self.analysis_success is not None:
            stmt = stmt.where(Call.analysis_success.is_(self.analysis_success))
        if self.q:
            pattern = like_pattern(self.q)
            said = or_(Turn.caller_text.ilike(pattern, escape="\\"), Turn.agent_text.ilike(pattern, escape="\\"))
            turns = select(Turn.id).where(Turn.call_id == Call.id, Turn.tenant_id == tenant_id, said)
            stmt = stmt.where(turns.exists())
        return stmt


async def list_calls(
    session: AsyncSession, tenant_id: uuid.UUID, match: CallFilter, limit: int = 50, offset: int = 0
) -> builtins.list[Call]:
    """The matching calls, newest first."""
    stmt = match.where(select(Call), tenant_id).order_by(Call.started_at.desc(), Call.id)
    return builtins.list(await session.scalars(stmt.limit(limit).offset(offset)))


async def count_calls(session: AsyncSession, tenant_id: uuid.UUID, match: CallFilter) -> int:
    """How many calls match (what ``x-total-count`` says, whatever the page)."""
    total = await session.scalar(match.where(select(func.count(Call.id)), tenant_id))
    return int(total or 0)


async def page_after(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    match: CallFilter,
    after: tuple[datetime, uuid.UUID] | None,
    size: int,
) -> builtins.list[Call]:
    """The next ``size`` matching calls, newest first, after ``after`` (the last page's last ``started_at``, ``id``)."""
    stmt = match.where(select(Call), tenant_id)
    if after is not None:
        started, call_id = after
        stmt = stmt.where(or_(Call.started_at < started, and_(Call.started_at == started, Call.id > call_id)))
    stmt = stmt.order_by(Call.started_at.desc(), Call.id).limit(size)
    return builtins.list(await session.scalars(stmt))


@dataclass(frozen=True)
class TurnStats:
    """A call's turns as the export reports them: how many, and their voice-to-voice p50/p95 (seconds)."""

    turns: int = 0
    v2v_p50: float | None = None
    v2v_p95: float | None = None


async def turn_stats(
    session: AsyncSession, tenant_id: uuid.UUID, call_ids: builtins.list[uuid.UUID]
) -> dict[uuid.UUID, TurnStats]:
    """:class:`TurnStats` of each of ``call_ids`` (one query for the lot; calls without turns are absent)."""
    if not call_ids:
        return {}
    rows = await session.execute(
        select(Turn.call_id, Turn.voice_to_voice).where(Turn.tenant_id == tenant_id, Turn.call_id.in_(call_ids))
    )
    counts: dict[uuid.UUID, int] = {}
    latencies: dict[uuid.UUID, builtins.list[float]] = {}
    for call_id, v2v in rows:
        counts[call_id] = counts.get(call_id, 0) + 1
        if v2v is not None:
            latencies.setdefault(call_id, []).append(float(v2v))
    out = {}
    for call_id, n in counts.items():
        values = latencies.get(call_id)
        if values:
            p50, p95 = (round(float(p), 3) for p in np.percentile(values, [50, 95]))
            out[call_id] = TurnStats(n, p50, p95)
        else:
            out[call_id] = TurnStats(n)
    return out

"""Call analytics: calls, minutes, voice-to-voice and interruptions per day, end reasons and transports.

The database groups calls into 15-minute buckets of their start (UTC epoch // 900): every time zone's offset is
a multiple of 15 minutes, so Python can then put each bucket on its local day in any zone without the two
databases needing to agree on time zone functions. Counts and sums are exact (grouped in SQL); percentiles are
computed over at most ``MAX_V2V_VALUES`` voice-to-voice values (the newest calls' first), so a year of a busy
tenant stays one quick request.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import BigInteger, ColumnElement, Integer, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Call, Turn

BUCKET_S = 900
MAX_V2V_VALUES = 100_000
MAX_KEYS = 50  # end reasons (which may quote an error) and transports listed; the rest count as "other"


@dataclass
class Figures:
    """Sums over some calls; :meth:`out` turns them into the API's figures."""

    calls: int = 0
    seconds: float = 0.0
    turns: int = 0
    interrupted: int = 0
    v2v_sum: float = 0.0
    v2v_count: int = 0
    v2v: list[float] = field(default_factory=list)

    def add(self, other: Figures) -> None:
        self.calls += other.calls
        self.seconds += other.seconds
        self.turns += other.turns
        self.interrupted += other.interrupted
        self.v2v_sum += other.v2v_sum
        self.v2v_count += other.v2v_count
        self.v2v.extend(other.v2v)

    def out(self) -> dict[str, Any]:
        p50 = p95 = None
        if self.v2v:
            p50, p95 = (round(float(v), 4) for v in np.percentile(np.asarray(self.v2v, dtype=np.float64), [50, 95]))
        return {
            "calls": self.calls,
            "minutes": round(self.seconds / 60, 3),
            "turns": self.turns,
            "v2v_avg": round(self.v2v_sum / self.v2v_count, 4) if self.v2v_count else None,
            "v2v_p50": p50,
            "v2v_p95": p95,
            "interruption_rate": round(self.interrupted / self.turns, 4) if self.turns else None,
        }


@dataclass
class Analytics:
    days: list[tuple[date, Figures]]
    totals: Figures
    end_reasons: dict[str, int]
    transports: dict[str, int]


def _bucket(dialect: str) -> ColumnElement[int]:
    """The call's start as a 15-minute bucket number (UTC epoch seconds // 900), on either database."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", Call.started_at) / BUCKET_S), BigInteger)
    return cast(func.strftime("%s", Call.started_at), Integer) // BUCKET_S


def _top(rows: list[tuple[str | None, int]]) -> dict[str, int]:
    """The ``MAX_KEYS`` most frequent keys; the rest summed as "other"."""
    ranked = sorted(((key or "unknown", n) for key, n in rows), key=lambda kv: -kv[1])
    out = dict(ranked[:MAX_KEYS])
    rest = sum(n for _, n in ranked[MAX_KEYS:])
    if rest:
        out["other"] = out.get("other", 0) + rest
    return out


class AnalyticsRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def figures(
        self, tenant_id: uuid.UUID, since: datetime, until: datetime, zone: ZoneInfo, agent_id: uuid.UUID | None
    ) -> Analytics:
        """The tenant's calls started in [since, until) (one agent's with ``agent_id``), day by day in ``zone``."""
        where = [Call.tenant_id == tenant_id, Call.started_at >= since, Call.started_at < until]
        if agent_id is not None:
            where.append(Call.agent_id == agent_id)
        buckets = await self._buckets(where)
        days: dict[date, Figures] = {}
        day = since.astimezone(zone).date()
        while day <= (until - timedelta(microseconds=1)).astimezone(zone).date():
            days[day] = Figures()
            day += timedelta(days=1)
        totals = Figures()
        for bucket, figures in buckets.items():
            local = datetime.fromtimestamp(bucket * BUCKET_S, zone).date()
            days.setdefault(local, Figures()).add(figures)
            totals.add(figures)
        reason = func.coalesce(Call.end_reason, Call.status)
        reasons = await self.session.execute(select(reason, func.count()).where(*where).group_by(reason))
        transports = await self.session.execute(
            select(Call.transport, func.count()).where(*where).group_by(Call.transport)
        )
        return Analytics(
            days=sorted(days.items()),
            totals=totals,
            end_reasons=_top([(r, int(n)) for r, n in reasons.all()]),
            transports=_top([(t, int(n)) for t, n in transports.all()]),
        )

    async def _buckets(self, where: list[ColumnElement[bool]]) -> dict[int, Figures]:
        """Per 15-minute bucket: calls and seconds, turns and interruptions, v2v sums and (bounded) values."""
        bucket = _bucket(self.session.get_bind().dialect.name).label("bucket")
        out: dict[int, Figures] = defaultdict(Figures)
        calls = select(bucket, func.count(), func.coalesce(func.sum(Call.duration_s), 0.0)).where(*where)
        for b, n, seconds in (await self.session.execute(calls.group_by(bucket))).all():
            out[int(b)].calls, out[int(b)].seconds = int(n), float(seconds or 0.0)
        interrupted = case((Turn.interrupted.is_(True), 1), else_=0)
        turns = (
            select(bucket, func.count(Turn.id), func.sum(interrupted), func.sum(Turn.voice_to_voice),
                   func.count(Turn.voice_to_voice))
            .select_from(Turn).join(Call, Call.id == Turn.call_id)
            .where(Turn.tenant_id == Call.tenant_id, *where).group_by(bucket)
        )  # fmt: skip
        for b, n, stopped, v2v_sum, v2v_n in (await self.session.execute(turns)).all():
            f = out[int(b)]
            f.turns, f.interrupted = int(n), int(stopped or 0)
            f.v2v_sum, f.v2v_count = float(v2v_sum or 0.0), int(v2v_n or 0)
        values = (
            select(bucket, Turn.voice_to_voice)
            .select_from(Turn).join(Call, Call.id == Turn.call_id)
            .where(Turn.tenant_id == Call.tenant_id, Turn.voice_to_voice.is_not(None), *where)
            .order_by(Call.started_at.desc()).limit(MAX_V2V_VALUES)
        )  # fmt: skip
        for b, v in (await self.session.execute(values)).all():
            out[int(b)].v2v.append(float(v or 0.0))
        return dict(out)

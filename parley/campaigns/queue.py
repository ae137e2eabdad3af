"""The durable dial queue: claims and settles campaign contacts in the database (both backends).

The claim counts what is under way and takes due contacts in one transaction. On PostgreSQL it first locks the
tenant row (``FOR NO KEY UPDATE``: other inserts naming the tenant still pass) and the campaign row, so workers
claiming for one tenant take turns and the per-campaign and per-tenant limits hold across all of them; contacts
are taken ``FOR UPDATE SKIP LOCKED``. On SQLite one writer at a time gives the same. The attempt row, with its
call id chosen here, is committed before anyone dials: a worker that dies after the commit leaves an attempt
that is reconciled (``dial_lost``), never dialled a second time. Settling an attempt is a conditional update
(``outcome IS NULL``), so of two workers settling the same attempt one wins and the contact moves once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.campaigns import outcomes, pacing
from parley.campaigns.schedule import RetryPolicy
from parley.store.models import Call, CallEvent, Tenant
from parley.store.models_campaigns import Campaign, CampaignAttempt, CampaignContact, DoNotCall

A, C = CampaignAttempt, CampaignContact
CAMPAIGN_ENDED = "campaign-ended"


@dataclass(frozen=True)
class InFlight:
    """An attempt with no outcome yet, and what its call record says so far (None: no record yet)."""

    attempt_id: uuid.UUID
    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    call_id: uuid.UUID
    worker_id: str | None
    started_at: datetime
    call_status: str | None
    end_reason: str | None
    duration_s: float | None


@dataclass(frozen=True)
class Claimed:
    """What a claim took: the contacts to dial, how many it skipped as do-not-call, and whether it looked for
    due contacts and found fewer than it had room for (the campaign may be finished)."""

    claims: list[Claim]
    dnc: int = 0
    exhausted: bool = False
    #: the per-minute rate allows nothing more before then (:func:`parley.campaigns.pacing.rate_reopens`)
    paced_until: datetime | None = None


@dataclass(frozen=True)
class Claim:
    """A contact this worker will dial now; its attempt row is committed."""

    attempt_id: uuid.UUID
    call_id: uuid.UUID
    number: int
    contact_id: uuid.UUID
    phone: str
    variables: dict[str, Any]
    language: str | None
    greeting: str | None


async def watched(s: AsyncSession) -> tuple[list[Campaign], list[InFlight]]:
    """Campaigns the scheduler looks at (running ones, and paused or cancelled ones with calls still under way)
    and their attempts with no outcome yet, with what each call record says so far: one statement a tick."""
    dialing = exists().where(C.campaign_id == Campaign.id, C.state == "dialing")
    rows = await s.execute(
        select(Campaign, A.id, A.campaign_id, A.contact_id, A.call_id, A.worker_id, A.started_at,
               Call.status, Call.end_reason, Call.duration_s)
        .outerjoin(A, and_(A.campaign_id == Campaign.id, A.outcome.is_(None)))
        .outerjoin(Call, Call.id == A.call_id)
        .where(or_(Campaign.status == "running", and_(Campaign.status.in_(("paused", "cancelled")), dialing)))
    )  # fmt: skip
    campaigns: dict[uuid.UUID, Campaign] = {}
    flights: list[InFlight] = []
    for campaign, *flight in rows:
        campaigns[campaign.id] = campaign
        if flight[0] is not None:
            flights.append(InFlight(*flight))
    return list(campaigns.values()), flights


async def detections(s: AsyncSession, call_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The latest ``machine_detection`` event of each call (answering-machine detection, where it ran)."""
    if not call_ids:
        return {}
    rows = await s.execute(
        select(CallEvent.call_id, CallEvent.data)
        .where(CallEvent.call_id.in_(call_ids), CallEvent.kind == "machine_detection")
        .order_by(CallEvent.id)
    )
    return {call_id: dict(data or {}) for call_id, data in rows}


async def earlier_outcomes(s: AsyncSession, flights: Sequence[InFlight]) -> dict[uuid.UUID, list[str | None]]:
    """The outcomes of the other attempts of each flight's contact (what the retry rules count), in one query."""
    if not flights:
        return {}
    mine = {f.attempt_id for f in flights}
    rows = await s.execute(
        select(A.contact_id, A.id, A.outcome).where(A.contact_id.in_({f.contact_id for f in flights}))
    )
    found: dict[uuid.UUID, list[str | None]] = {f.contact_id: [] for f in flights}
    for contact_id, attempt_id, outcome in rows:
        if attempt_id not in mine:
            found[contact_id].append(outcome)
    return found


@dataclass(frozen=True)
class Settling:
    """An attempt to settle: its outcome, its campaign's retry policy, and whether the campaign was cancelled or
    is past its ``end_at`` (a retry it earned is then ``cancelled`` or ``failed``)."""

    flight: InFlight
    outcome: str
    policy: RetryPolicy
    cancelled: bool = False
    ended: bool = False


async def settle(s: AsyncSession, items: Sequence[Settling], now: datetime) -> list[outcomes.Decision]:
    """Records the attempts' outcomes and moves their contacts on, a statement per outcome and per decision
    rather than per attempt; the decisions of the attempts this call settled (one another worker settled first
    is left out)."""
    by_outcome: dict[str, list[uuid.UUID]] = {}
    for item in items:
        by_outcome.setdefault(item.outcome, []).append(item.flight.attempt_id)
    won: set[uuid.UUID] = set()
    for outcome, ids in sorted(by_outcome.items()):  # one order on every worker: no deadlock between two
        won.update(await s.scalars(
            update(A).where(A.id.in_(sorted(ids)), A.outcome.is_(None)).values(outcome=outcome, ended_at=now)
            .returning(A.id).execution_options(synchronize_session=False)
        ))  # fmt: skip
    mine = [item for item in items if item.flight.attempt_id in won]
    retried = [item.flight for item in mine if (found := outcomes.rule(item.policy, item.outcome)) and found.count]
    earlier = await earlier_outcomes(s, retried)  # only where a rule could give another attempt
    groups: dict[tuple[str, str, datetime | None], list[uuid.UUID]] = {}
    decisions: list[outcomes.Decision] = []
    for item in mine:
        decision = outcomes.decide(item.policy, item.outcome, earlier.get(item.flight.contact_id, []), now)
        if decision.state == "pending" and (item.cancelled or item.ended):
            decision = outcomes.Decision("cancelled" if item.cancelled else "failed")
        groups.setdefault((decision.state, item.outcome, decision.next_attempt_at), []).append(item.flight.contact_id)
        decisions.append(decision)
    for (state, outcome, next_at), contact_ids in sorted(
        groups.items(), key=lambda g: (g[0][0], g[0][1], str(g[0][2]))
    ):
        await s.execute(
            update(C).where(C.id.in_(sorted(contact_ids)), C.state == "dialing")
            .values(state=state, outcome=outcome, next_attempt_at=next_at, updated_at=now)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
    return decisions


async def pending_zones(s: AsyncSession, campaign_id: uuid.UUID) -> list[str]:
    """The time zones of the campaign's contacts waiting for an attempt or being dialled (both may be next)."""
    waiting = C.state.in_(("pending", "dialing"))
    rows = await s.scalars(select(C.timezone).where(C.campaign_id == campaign_id, waiting).distinct())
    return sorted(rows)


async def _lock(s: AsyncSession, campaign: Campaign, postgres: bool) -> None:
    """Serialises claims of the tenant's campaigns on PostgreSQL. On SQLite a no-op write comes first: it takes
    the database's write lock (waiting its turn), so the counts and contacts read next cannot change under the
    claim (the driver starts a transaction only at the first write; reads before it would stand outside)."""
    if postgres:
        await s.execute(select(Tenant.id).where(Tenant.id == campaign.tenant_id).with_for_update(key_share=True))
        await s.execute(select(Campaign.id).where(Campaign.id == campaign.id).with_for_update(key_share=True))
    else:
        await s.execute(
            update(Campaign).where(Campaign.id == campaign.id).values(status=Campaign.status)
            .execution_options(synchronize_session=False)
        )  # fmt: skip


async def load(s: AsyncSession, campaign: Campaign, now: datetime, worker_free: int) -> tuple[str | None, pacing.Load]:
    """The campaign's status and what is under way, counted inside the claim's transaction in one statement."""
    in_flight = select(func.count()).where(A.outcome.is_(None))
    tenant_campaigns = select(Campaign.id).where(Campaign.tenant_id == campaign.tenant_id)
    since = {w: now - timedelta(seconds=w) for w in pacing.WINDOWS_S}
    columns: list[Any] = [
        select(Campaign.status).where(Campaign.id == campaign.id).scalar_subquery(),
        in_flight.where(A.campaign_id == campaign.id).scalar_subquery(),
        in_flight.where(A.campaign_id.in_(tenant_campaigns)).scalar_subquery(),
    ]
    for w in pacing.WINDOWS_S:
        inside = A.started_at > since[w]
        columns += [func.coalesce(func.sum(case((inside, 1), else_=0)), 0), func.min(case((inside, A.started_at)))]
    row = (await s.execute(
        select(*columns).where(A.campaign_id == campaign.id, A.started_at > since[max(pacing.WINDOWS_S)])
    )).one()  # fmt: skip
    status, recent = row[0], row[3:]
    started = {w: int(recent[2 * i]) for i, w in enumerate(pacing.WINDOWS_S)}
    oldest = {w: found for i, w in enumerate(pacing.WINDOWS_S) if (found := _aware(recent[2 * i + 1])) is not None}
    load = pacing.Load(int(row[1] or 0), int(row[2] or 0), worker_free, started, oldest)
    return (str(status) if status is not None else None), load


def _aware(value: Any) -> datetime | None:
    """An aggregate's datetime as UTC-aware (SQLite hands back text or a naive datetime for ``min()``)."""
    if value is None:
        return None
    found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def _due(campaign_id: uuid.UUID, now: datetime, zones: Sequence[str] | None, room: int, postgres: bool) -> Select[Any]:
    """Up to ``room`` due pending contacts in ``zones``, each with its do-not-call entry if it has one since the
    import (locked and skipped by other workers on PostgreSQL)."""
    listed_phone = and_(DoNotCall.tenant_id == C.tenant_id, DoNotCall.phone == C.phone)
    due = or_(C.next_attempt_at.is_(None), C.next_attempt_at <= now)
    query = (
        select(C.id, C.phone, C.attempts, C.variables, C.language, C.greeting, DoNotCall.phone)
        .outerjoin(DoNotCall, listed_phone)
        .where(C.campaign_id == campaign_id, C.state == "pending", due)
    )
    if zones is not None:
        query = query.where(C.timezone.in_(zones))
    query = query.limit(room)
    return query.with_for_update(of=C, skip_locked=True) if postgres else query


async def claim(
    s: AsyncSession,
    campaign: Campaign,
    now: datetime,
    limits: pacing.Limits,
    worker_free: int,
    zones: Sequence[str] | None,
    worker_id: str,
    postgres: bool,
) -> Claimed:
    """Takes up to the room left of the campaign's due contacts in ``zones`` (None: every zone) and adds their
    attempts (committed with the caller's session, before any dial)."""
    if zones is not None and not zones:
        return Claimed([])
    await _lock(s, campaign, postgres)
    status, counted = await load(s, campaign, now, worker_free)
    if status != "running":  # paused or cancelled since this tick read it
        return Claimed([])
    room = pacing.room(counted, limits)
    if room <= 0:
        return Claimed([], paced_until=pacing.rate_reopens(counted, limits))
    found = (await s.execute(_due(campaign.id, now, zones, room, postgres))).all()
    if not found:
        return Claimed([], 0, True)
    listed = [row.id for row in found if row[6] is not None]  # put on the list since the import: never dialled
    if listed:
        await s.execute(
            update(C).where(C.id.in_(listed))
            .values(state="dnc", outcome=outcomes.DNC, next_attempt_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
    claims = [
        Claim(uuid.uuid4(), uuid.uuid4(), row.attempts + 1, row.id, row.phone, dict(row.variables or {}),
              row.language, row.greeting)
        for row in found if row[6] is None
    ]  # fmt: skip
    if claims:
        await s.execute(
            update(C).where(C.id.in_([c.contact_id for c in claims]))
            .values(state="dialing", attempts=C.attempts + 1, next_attempt_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        await s.execute(insert(A), [
            {"id": c.attempt_id, "tenant_id": campaign.tenant_id, "campaign_id": campaign.id,
             "contact_id": c.contact_id, "number": c.number, "call_id": c.call_id, "worker_id": worker_id,
             "started_at": now}
            for c in claims
        ])  # fmt: skip
    return Claimed(claims, len(listed), len(found) < room)


async def end_remaining(s: AsyncSession, campaign_id: uuid.UUID, now: datetime) -> int:
    """Past the campaign's ``end_at``: its waiting contacts end as failed (``campaign-ended``)."""
    result = await s.execute(
        update(C)
        .where(C.campaign_id == campaign_id, C.state == "pending")
        .values(state="failed", outcome=CAMPAIGN_ENDED, next_attempt_at=None, updated_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def unfinished(s: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """Whether any contact still waits or is being dialled."""
    found = await s.scalar(
        select(C.id).where(C.campaign_id == campaign_id, C.state.in_(("pending", "dialing"))).limit(1)
    )
    return found is not None


async def set_status(
    s: AsyncSession, campaign_id: uuid.UUID, now: datetime, status: str, reason: str | None = None
) -> bool:
    """Moves a running campaign to ``status``; False if it was not running any more (another worker, a user)."""
    values: dict[str, Any] = {"status": status, "status_reason": reason, "updated_at": now}
    if status == "completed":
        values["completed_at"] = now
    result = await s.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "running").values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def counts(s: AsyncSession, campaign_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """Contacts by state and by outcome (the ``campaign.completed`` event's summary)."""
    by_state = (await s.execute(
        select(C.state, func.count()).where(C.campaign_id == campaign_id).group_by(C.state)
    )).all()  # fmt: skip
    by_outcome = (await s.execute(
        select(C.outcome, func.count()).where(C.campaign_id == campaign_id, C.outcome.is_not(None)).group_by(C.outcome)
    )).all()  # fmt: skip
    return {"states": {str(k): int(v) for k, v in by_state}, "outcomes": {str(k): int(v) for k, v in by_outcome}}

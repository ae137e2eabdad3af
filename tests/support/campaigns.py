"""The campaign engine's test parts: a fast clock, a recording fake dial that writes real call records, and
helpers that put a tenant, an agent and a running campaign with contacts in a real database."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from parley.calls.identity import CallTarget
from parley.campaigns.schedule import CampaignSchedule, RetryPolicy
from parley.store.agents import AgentRepo
from parley.store.calls import CallRepo, CallStatus
from parley.store.db import Database
from parley.store.models import Call, Tenant
from parley.store.models_campaigns import Campaign, CampaignAttempt, CampaignContact
from parley.store.tenants import TenantRepo
from parley.telephony.outbound import DialError

AGENT_DOC: dict[str, Any] = {"name": "campaign-caller", "system_prompt": "You call to confirm appointments."}


class FastClock:
    """The scheduler's clock, moved by the test: a day of schedule passes in as many ticks as the test runs."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class Dialled:
    to: str
    call_id: uuid.UUID
    at: datetime
    variables: dict[str, str]
    machine_detection: bool
    provider: str


#: what one dial does: "answer" (60 s call), "short" (2 s), "machine" (answered by a voicemail box), "busy",
#: "no-answer", "decline", "raise" (the carrier refused: the dial raises), "lost" (no record: a crash mid-dial),
#: "hold" (answered and still live until :meth:`FakeDial.end_held`)
Behaviour = str


@dataclass
class FakeDial:
    """Records every dial and writes the call record the real dial would, as ``script(to, n)`` says."""

    db: Database
    clock: Callable[[], datetime]
    script: Callable[[str, int], Behaviour] = lambda to, n: "answer"
    dialled: list[Dialled] = field(default_factory=list)
    held: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)

    def times(self, to: str) -> int:
        return sum(1 for d in self.dialled if d.to == to)

    async def __call__(
        self,
        app: Any,
        target: CallTarget,
        provider: str,
        to: str,
        from_: str | None,
        base_url: str | None = None,
        *,
        call_id: uuid.UUID | None = None,
        variables: dict[str, str] | None = None,
        machine_detection: bool = False,
    ) -> Call:
        assert call_id is not None
        self.dialled.append(Dialled(to, call_id, self.clock(), dict(variables or {}), machine_detection, provider))
        behaviour = self.script(to, self.times(to))
        if behaviour == "raise":
            raise DialError("the carrier said no")
        if behaviour == "lost":  # the worker died before the record was written
            return Call(id=call_id, tenant_id=target.tenant_id, status="dialing")
        async with self.db.session() as s:
            repo = CallRepo(s)
            call = await repo.create(target.tenant_id, target.agent_id, target.agent_version, target.agent_name,
                                     provider, caller=from_, direction="outbound", called=to,
                                     status=CallStatus.DIALING, call_id=call_id)  # fmt: skip
            await self._finish(repo, target.tenant_id, call_id, behaviour)
        return call

    async def _finish(self, repo: CallRepo, tenant_id: uuid.UUID, call_id: uuid.UUID, behaviour: Behaviour) -> None:
        failed = {"busy": "sip-486 Busy Here", "no-answer": "no-answer", "decline": "sip-603 Decline"}
        if behaviour in failed:
            await repo.end(tenant_id, call_id, CallStatus.FAILED, failed[behaviour], 0.0)
        elif behaviour == "hold":
            await repo.activate(tenant_id, call_id, None)
            self.held.append((tenant_id, call_id))
        elif behaviour == "ring":
            pass
        else:
            if behaviour == "machine":
                await repo.add_event(tenant_id, call_id, 1.0, "machine_detection", {"answered_by": "machine_start"})
            seconds = 2.0 if behaviour == "short" else 60.0
            await repo.end(tenant_id, call_id, CallStatus.ENDED, "agent-hangup", seconds)

    async def end_held(self, failed: str | None = None) -> int:
        """Ends every held call (answered, 60 s; or failed with reason ``failed``): the next tick settles them."""
        held, self.held = self.held, []
        status, reason, seconds = (
            (CallStatus.FAILED, failed, 0.0) if failed else (CallStatus.ENDED, "caller-hangup", 60.0)
        )
        async with self.db.session() as s:
            for tenant_id, call_id in held:
                await CallRepo(s).end(tenant_id, call_id, status, reason, seconds)
        return len(held)


async def new_tenant(db: Database) -> uuid.UUID:
    async with db.session() as s:
        return (await TenantRepo(s).get_or_create(f"campaigns-{uuid.uuid4().hex}")).id


async def drop_tenant(db: Database, tenant_id: uuid.UUID) -> None:
    async with db.session() as s:
        await s.execute(delete(Tenant).where(Tenant.id == tenant_id))


async def new_agent(db: Database, tenant_id: uuid.UUID) -> uuid.UUID:
    async with db.session() as s:
        return (await AgentRepo(s).create(tenant_id, f"caller-{uuid.uuid4().hex[:8]}", AGENT_DOC)).id


@dataclass(frozen=True)
class Person:
    phone: str
    timezone: str = "UTC"
    variables: dict[str, str] = field(default_factory=dict)
    language: str | None = None
    greeting: str | None = None


async def running_campaign(
    db: Database,
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID,
    people: Sequence[Person],
    schedule: CampaignSchedule,
    retry: RetryPolicy | None = None,
    started_at: datetime | None = None,
    voicemail: dict[str, Any] | None = None,
) -> uuid.UUID:
    campaign_id = uuid.uuid4()
    async with db.session() as s:
        s.add(Campaign(id=campaign_id, tenant_id=tenant_id, name=f"c-{campaign_id.hex[:6]}", agent_id=agent_id,
                       provider="sip", caller_id="+15550000000", status="running",
                       schedule=schedule.model_dump(mode="json"),
                       retry=(retry or RetryPolicy()).model_dump(mode="json"), voicemail=voicemail,
                       started_at=started_at or datetime(2026, 1, 1, tzinfo=UTC)))  # fmt: skip
        await s.flush()
        for i, p in enumerate(people):
            contact = CampaignContact(id=uuid.uuid4(), tenant_id=tenant_id, campaign_id=campaign_id, row=i + 1,
                                      phone=p.phone, variables=p.variables, timezone=p.timezone,
                                      language=p.language, greeting=p.greeting, state="pending")  # fmt: skip
            s.add(contact)
    return campaign_id


def numbers(n: int, prefix: str = "+1555") -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(n)]


async def campaign(db: Database, campaign_id: uuid.UUID) -> Campaign:
    async with db.session() as s:
        found = await s.get(Campaign, campaign_id)
        assert found is not None
        return found


async def contacts(db: Database, campaign_id: uuid.UUID) -> dict[str, CampaignContact]:
    async with db.session() as s:
        rows = await s.scalars(select(CampaignContact).where(CampaignContact.campaign_id == campaign_id))
        return {c.phone: c for c in rows}


async def attempts(db: Database, campaign_id: uuid.UUID) -> list[CampaignAttempt]:
    async with db.session() as s:
        query = select(CampaignAttempt).where(CampaignAttempt.campaign_id == campaign_id)
        return list(await s.scalars(query.order_by(CampaignAttempt.started_at, CampaignAttempt.number)))


async def in_flight(db: Database, campaign_ids: Sequence[uuid.UUID]) -> int:
    async with db.session() as s:
        found = await s.scalar(
            select(func.count()).where(CampaignAttempt.campaign_id.in_(campaign_ids), CampaignAttempt.outcome.is_(None))
        )
        return int(found or 0)

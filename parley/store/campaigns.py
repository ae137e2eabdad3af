"""Campaigns in the store: create, read, edit, state changes, counts, contact pages and export rows.

The scheduler's claim and settle queries live in parley.campaigns.queue; this is what the API needs.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Call, utcnow
from parley.store.models_campaigns import Campaign, CampaignAttempt, CampaignContact

C, A = CampaignContact, CampaignAttempt
EXPORT_BATCH = 500


class CampaignRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, tenant_id: uuid.UUID, **fields: Any) -> Campaign:
        now = utcnow()
        row = Campaign(id=uuid.uuid4(), tenant_id=tenant_id, status="draft", created_at=now, updated_at=now, **fields)
        self.session.add(row)
        await self.session.flush()
        return row

    async def get(self, tenant_id: uuid.UUID, campaign_id: uuid.UUID, *, lock: bool = False) -> Campaign | None:
        q = select(Campaign).where(Campaign.tenant_id == tenant_id, Campaign.id == campaign_id)
        if lock:
            q = q.with_for_update()
        return (await self.session.scalars(q)).one_or_none()

    async def list(self, tenant_id: uuid.UUID, limit: int = 50, offset: int = 0) -> builtins.list[Campaign]:
        q = select(Campaign).where(Campaign.tenant_id == tenant_id).order_by(Campaign.created_at.desc(), Campaign.id)
        return list((await self.session.scalars(q.limit(limit).offset(offset))).all())

    async def update(self, campaign: Campaign, **fields: Any) -> Campaign:
        for name, value in fields.items():
            setattr(campaign, name, value)
        campaign.updated_at = utcnow()
        await self.session.flush()
        return campaign

    async def set_status(
        self, tenant_id: uuid.UUID, campaign_id: uuid.UUID, status: str, reason: str | None = None
    ) -> Campaign | None:
        campaign = await self.get(tenant_id, campaign_id, lock=True)
        if campaign is None:
            return None
        now = utcnow()
        campaign.status, campaign.status_reason, campaign.updated_at = status, reason, now
        if status == "running" and campaign.started_at is None:
            campaign.started_at = now
        if status in ("completed", "cancelled"):
            campaign.completed_at = now
        if status == "cancelled":  # in-flight calls finish; nothing waiting is dialled
            await self.session.execute(
                update(C)
                .where(C.campaign_id == campaign_id, C.state == "pending")
                .values(state="cancelled", updated_at=now)
            )
        await self.session.flush()
        return campaign

    async def delete(self, campaign: Campaign) -> None:
        await self.session.execute(delete(A).where(A.campaign_id == campaign.id))
        await self.session.execute(delete(C).where(C.campaign_id == campaign.id))
        await self.session.delete(campaign)
        await self.session.flush()

    async def counts(self, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> dict[str, Any]:
        """Contacts by state and by last outcome, and the attempts under way (no outcome yet)."""
        by_state = await self.session.execute(
            select(C.state, func.count())
            .where(C.tenant_id == tenant_id, C.campaign_id == campaign_id)
            .group_by(C.state)
        )
        by_outcome = await self.session.execute(
            select(C.outcome, func.count())
            .where(C.tenant_id == tenant_id, C.campaign_id == campaign_id, C.outcome.is_not(None))
            .group_by(C.outcome)
        )
        in_flight = await self.session.scalar(
            select(func.count()).where(A.tenant_id == tenant_id, A.campaign_id == campaign_id, A.outcome.is_(None))
        )
        states = {str(k): int(v) for k, v in by_state.all()}
        return {
            "total": sum(states.values()),
            "by_state": states,
            "by_outcome": {str(k): int(v) for k, v in by_outcome.all()},
            "in_flight": int(in_flight or 0),
        }

    async def contact_count(self, campaign_id: uuid.UUID, state: str | None = None) -> int:
        q = select(func.count()).select_from(C).where(C.campaign_id == campaign_id)
        if state is not None:
            q = q.where(C.state == state)
        return int(await self.session.scalar(q) or 0)

    async def contacts_page(
        self, campaign_id: uuid.UUID, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> builtins.list[tuple[CampaignContact, builtins.list[CampaignAttempt]]]:
        """Contacts in upload order, each with its attempts (oldest first)."""
        q = select(C).where(C.campaign_id == campaign_id)
        if state is not None:
            q = q.where(C.state == state)
        contacts = list((await self.session.scalars(q.order_by(C.row, C.id).limit(limit).offset(offset))).all())
        attempts = await self._attempts([c.id for c in contacts])
        return [(c, attempts.get(c.id, [])) for c in contacts]

    async def _attempts(self, contact_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, builtins.list[CampaignAttempt]]:
        out: dict[uuid.UUID, builtins.list[CampaignAttempt]] = {}
        if not contact_ids:
            return out
        rows = await self.session.scalars(select(A).where(A.contact_id.in_(contact_ids)).order_by(A.number))
        for a in rows:
            out.setdefault(a.contact_id, []).append(a)
        return out

    async def add_contacts(self, batch: Sequence[dict[str, Any]]) -> int:
        """Inserts a batch of contact rows (dicts of CampaignContact's columns); the caller removed duplicates."""
        if not batch:
            return 0
        now = utcnow()
        rows = [{"id": uuid.uuid4(), "state": "pending", "attempts": 0, "updated_at": now, **r} for r in batch]
        await self.session.execute(insert(C), rows)
        return len(rows)

    async def existing_phones(self, campaign_id: uuid.UUID, phones: Sequence[str]) -> set[str]:
        if not phones:
            return set()
        q = select(C.phone).where(C.campaign_id == campaign_id, C.phone.in_(list(set(phones))))
        return set((await self.session.scalars(q)).all())

    async def export_rows(
        self, campaign_id: uuid.UUID
    ) -> AsyncIterator[tuple[CampaignContact, CampaignAttempt | None, dict[str, Any] | None]]:
        """Every contact in upload order with its last attempt and that attempt's call analysis, in batches
        (keyset on row/id), so an export of many contacts holds one batch at a time."""
        last: tuple[int, uuid.UUID] | None = None
        while True:
            q = select(C).where(C.campaign_id == campaign_id)
            if last is not None:
                q = q.where((C.row > last[0]) | ((C.row == last[0]) & (C.id > last[1])))
            contacts = list((await self.session.scalars(q.order_by(C.row, C.id).limit(EXPORT_BATCH))).all())
            if not contacts:
                return
            attempts = await self._attempts([c.id for c in contacts])
            lasts = {cid: a[-1] for cid, a in attempts.items() if a}
            call_ids = [a.call_id for a in lasts.values()]
            analyses: dict[uuid.UUID, dict[str, Any] | None] = {}
            if call_ids:
                got = await self.session.execute(select(Call.id, Call.analysis).where(Call.id.in_(call_ids)))
                analyses = {cid: analysis for cid, analysis in got.all()}
            for c in contacts:
                attempt = lasts.get(c.id)
                yield c, attempt, analyses.get(attempt.call_id) if attempt else None
            last = (contacts[-1].row, contacts[-1].id)

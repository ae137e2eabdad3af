"""A tenant's do-not-call list: numbers (E.164) no campaign dials. Checked at import and before every dial."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import utcnow
from parley.store.models_campaigns import DoNotCall


class DncRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, tenant_id: uuid.UUID, phone: str, reason: str | None = None) -> DoNotCall:
        """Adds (or re-reasons) a number; adding it twice is not an error."""
        row = await self.session.get(DoNotCall, (tenant_id, phone))
        if row is None:
            row = DoNotCall(tenant_id=tenant_id, phone=phone, reason=reason, created_at=utcnow())
            self.session.add(row)
        else:
            row.reason = reason
        await self.session.flush()
        return row

    async def get(self, tenant_id: uuid.UUID, phone: str) -> DoNotCall | None:
        return await self.session.get(DoNotCall, (tenant_id, phone))

    async def list(self, tenant_id: uuid.UUID, limit: int = 100, offset: int = 0) -> builtins.list[DoNotCall]:
        q = select(DoNotCall).where(DoNotCall.tenant_id == tenant_id).order_by(DoNotCall.phone)
        return list((await self.session.scalars(q.limit(limit).offset(offset))).all())

    async def delete(self, tenant_id: uuid.UUID, phone: str) -> bool:
        q = delete(DoNotCall).where(DoNotCall.tenant_id == tenant_id, DoNotCall.phone == phone)
        return bool((await self.session.execute(q)).rowcount)  # type: ignore[attr-defined]

    async def listed(self, tenant_id: uuid.UUID, phones: Iterable[str]) -> set[str]:
        """Which of ``phones`` are on the list (one query; callers pass a batch, not a whole file)."""
        wanted = list(set(phones))
        if not wanted:
            return set()
        q = select(DoNotCall.phone).where(DoNotCall.tenant_id == tenant_id, DoNotCall.phone.in_(wanted))
        return set((await self.session.scalars(q)).all())

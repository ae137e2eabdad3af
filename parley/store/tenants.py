"""Tenants: the unit of isolation. Every other row points at one."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Tenant, utcnow


class TenantRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_or_create(self, name: str) -> Tenant:
        """The tenant called ``name``, created if new; safe when two workers race to create it."""
        existing = await self.by_name(name)
        if existing is not None:
            return existing
        values = {"id": uuid.uuid4(), "name": name, "created_at": utcnow()}
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        await self.session.execute(insert(Tenant).values(**values).on_conflict_do_nothing(index_elements=["name"]))
        tenant = await self.by_name(name)
        assert tenant is not None
        return tenant

    async def get(self, tenant_id: uuid.UUID) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def by_name(self, name: str) -> Tenant | None:
        return await self.session.scalar(select(Tenant).where(Tenant.name == name))

"""Agents and their version history. An update never rewrites history: it adds a version,
so a call can always show the exact document it ran."""

from __future__ import annotations

import builtins
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import load_only

from parley.store.errors import Conflict
from parley.store.models import Agent, AgentVersion, utcnow


class AgentRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _flush_unique(self, name: str) -> None:
        # The name was checked first, so this only fires when two requests race; the
        # transaction is then spoiled and the caller's session block rolls it back.
        try:
            await self.session.flush()
        except IntegrityError as e:
            raise Conflict(f"an agent named {name!r} already exists") from e

    async def create(self, tenant_id: uuid.UUID, name: str, document: dict[str, Any]) -> Agent:
        """A new agent at version 1; ``Conflict`` if this tenant already has one by that name."""
        if await self.by_name(tenant_id, name) is not None:
            raise Conflict(f"an agent named {name!r} already exists")
        now = utcnow()
        agent = Agent(id=uuid.uuid4(), tenant_id=tenant_id, name=name, version=1, document=document)
        agent.created_at = agent.updated_at = now
        self.session.add(agent)
        self.session.add(AgentVersion(agent_id=agent.id, version=1, document=document, created_at=now))
        await self._flush_unique(name)
        return agent

    async def list(self, tenant_id: uuid.UUID, limit: int = 50, offset: int = 0) -> builtins.list[Agent]:
        rows = await self.session.scalars(
            select(Agent).where(Agent.tenant_id == tenant_id).order_by(Agent.name, Agent.id).limit(limit).offset(offset)
        )
        return builtins.list(rows)

    async def get(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> Agent | None:
        return await self.session.scalar(select(Agent).where(Agent.tenant_id == tenant_id, Agent.id == agent_id))

    async def by_name(self, tenant_id: uuid.UUID, name: str) -> Agent | None:
        return await self.session.scalar(select(Agent).where(Agent.tenant_id == tenant_id, Agent.name == name))

    async def update(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, name: str, document: dict[str, Any]
    ) -> Agent | None:
        """Saves ``document`` as the next version (renaming too); None if the agent is not this tenant's.

        ``Conflict`` if the new name belongs to another of the tenant's agents.
        """
        agent = await self.session.scalar(
            select(Agent).where(Agent.tenant_id == tenant_id, Agent.id == agent_id).with_for_update()
        )
        if agent is None:
            return None
        if name != agent.name:
            other = await self.by_name(tenant_id, name)
            if other is not None:
                raise Conflict(f"an agent named {name!r} already exists")
        now = utcnow()
        agent.name = name
        agent.version += 1
        agent.document = document
        agent.updated_at = now
        self.session.add(AgentVersion(agent_id=agent.id, version=agent.version, document=document, created_at=now))
        await self._flush_unique(name)
        return agent

    async def versions(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        limit: int | None = None,
        offset: int = 0,
        documents: bool = True,
    ) -> builtins.list[AgentVersion]:
        """Versions oldest first, a page of them with ``limit``/``offset``; empty if the agent is not this
        tenant's. ``documents=False`` leaves the documents unread (a history page stays small however large
        each version is); reading ``document`` of such a version is then an error."""
        query = (
            select(AgentVersion)
            .join(Agent, Agent.id == AgentVersion.agent_id)
            .where(Agent.tenant_id == tenant_id, Agent.id == agent_id)
            .order_by(AgentVersion.version)
            .offset(offset)
            .limit(limit)
        )
        if not documents:
            query = query.options(load_only(AgentVersion.version, AgentVersion.created_at, raiseload=True))
        return builtins.list(await self.session.scalars(query))

    async def version(self, tenant_id: uuid.UUID, agent_id: uuid.UUID, version: int) -> AgentVersion | None:
        return await self.session.scalar(
            select(AgentVersion)
            .join(Agent, Agent.id == AgentVersion.agent_id)
            .where(Agent.tenant_id == tenant_id, Agent.id == agent_id, AgentVersion.version == version)
        )

    async def delete(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> bool:
        """Deletes the agent and its versions; its calls stay (they carry the name and version)."""
        agent = await self.get(tenant_id, agent_id)
        if agent is None:
            return False
        await self.session.execute(delete(AgentVersion).where(AgentVersion.agent_id == agent_id))
        await self.session.delete(agent)
        await self.session.flush()
        return True

"""Which agent answers a phone call: named in the webhook/request-URI, or found by the dialled number.

Carriers reach Parley without an API key (their requests are authenticated by a
signature, or come from a trusted PBX), so the lookup spans tenants: an agent id is
unique everywhere, a number mapping names its tenant, and an agent *name* needs a
tenant (given, ``PARLEY_TELEPHONY_TENANT``, or the only tenant with that name).
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.agent.document import AgentDocumentError, parse_agent
from parley.calls.identity import CallTarget
from parley.store.db import Database
from parley.store.models import Agent, Tenant
from parley.store.numbers import NumberRepo

log = structlog.get_logger(__name__)


class NoSuchAgent(LookupError):
    """No agent answers this call (the message says what was looked for; safe to show the carrier)."""


async def resolve_target(
    db: Database,
    agent_ref: str | None = None,
    called: str | None = None,
    tenant_ref: str | None = None,
    default_tenant: str | None = None,
) -> CallTarget:
    """The agent for a call: ``agent_ref`` (id or name) first, else the mapping of ``called``."""
    async with db.session() as s:
        agent: Agent | None = None
        tenant = tenant_ref or default_tenant
        tenant_id = await _tenant_id(s, tenant) if tenant else None
        if tenant and tenant_id is None:
            raise NoSuchAgent(f"no tenant {tenant!r}")
        if agent_ref:
            agent = await _agent_by_ref(s, agent_ref, tenant_id)
            if agent is None:
                raise NoSuchAgent(f"no agent {agent_ref!r}")
        elif called:
            mapping = await NumberRepo(s).lookup(called)
            if mapping is not None and (tenant_id is None or mapping.tenant_id == tenant_id):
                agent = await s.get(Agent, mapping.agent_id)
            if agent is None:
                raise NoSuchAgent(f"no agent answers {called!r}")
        else:
            raise NoSuchAgent("the call names no agent and no number")
    try:
        document = parse_agent(agent.document, f"agent {agent.name}")
    except AgentDocumentError as exc:
        log.warning("telephony_agent_invalid", agent_id=str(agent.id))
        raise NoSuchAgent(f"agent {agent.name!r} cannot take calls: {str(exc).splitlines()[0]}") from None
    return CallTarget(agent.tenant_id, agent.id, agent.version, agent.name, document)


async def _tenant_id(s: AsyncSession, ref: str) -> uuid.UUID | None:
    try:
        tid = uuid.UUID(ref)
        return await s.scalar(select(Tenant.id).where(Tenant.id == tid))
    except ValueError:
        return await s.scalar(select(Tenant.id).where(Tenant.name == ref))


async def _agent_by_ref(s: AsyncSession, ref: str, tenant_id: uuid.UUID | None) -> Agent | None:
    try:
        agent_id = uuid.UUID(ref)
    except ValueError:
        query = select(Agent).where(Agent.name == ref)
        if tenant_id is not None:
            query = query.where(Agent.tenant_id == tenant_id)
        found = list(await s.scalars(query.limit(2)))
        return found[0] if len(found) == 1 else None  # ambiguous across tenants: refuse
    agent = await s.get(Agent, agent_id)
    if agent is None or (tenant_id is not None and agent.tenant_id != tenant_id):
        return None
    return agent

"""The events the call code emits: outbox rows in the caller's transaction, so the call never waits on a
receiver, and an event is stored exactly when what it reports is."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.calls import CallRepo
from parley.store.models import Webhook
from parley.webhooks.store import enqueue


async def call_started(
    s: AsyncSession, tenant_id: uuid.UUID, call_id: uuid.UUID, agent_id: uuid.UUID | None, data: dict[str, Any]
) -> None:
    await enqueue(s, tenant_id, "call.started", data, call_id, agent_id)


async def call_ended(
    s: AsyncSession, tenant_id: uuid.UUID, call_id: uuid.UUID, agent_id: uuid.UUID | None, data: dict[str, Any]
) -> None:
    """``call.ended``, then ``transcript.final`` with the stored turns (read only if someone subscribed)."""
    await enqueue(s, tenant_id, "call.ended", data, call_id, agent_id)
    hooks = await s.scalars(select(Webhook.events).where(Webhook.tenant_id == tenant_id))
    if not any("transcript.final" in (events or ()) for events in hooks):
        return
    turns = [
        {"turn": t.turn, "caller_text": t.caller_text, "agent_text": t.agent_text, "interrupted": t.interrupted}
        for t in await CallRepo(s).turns(tenant_id, call_id)
    ]
    await enqueue(s, tenant_id, "transcript.final", {"turns": turns}, call_id, agent_id)


async def call_analyzed(s: AsyncSession, tenant_id: uuid.UUID, call_id: uuid.UUID, result: dict[str, Any]) -> None:
    await enqueue(s, tenant_id, "call.analyzed", {"analysis": result}, call_id)

"""Subscriptions and the outbox: a delivery row per (event, webhook), written in the emitting transaction, then
claimed by a worker with a lease (so a crashed worker's rows return after ``lease_s``) and finished in place,
which makes the same rows the delivery log.

A call's events go out in order: a row is due only when no earlier row of the same webhook and call is still
pending (delivered or given up both unblock it).
"""

from __future__ import annotations

import builtins
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet
from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from parley.store.models import Call, Webhook, WebhookDelivery, utcnow

D = WebhookDelivery


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class WebhookRepo:
    """A tenant's webhooks; every query names the tenant, so another tenant's rows are simply not found."""

    def __init__(self, session: AsyncSession, cipher: MultiFernet | None = None) -> None:
        self.session, self.cipher = session, cipher

    def _seal(self, row: Webhook, secret: str) -> str:
        assert self.cipher is not None
        payload = {"tenant": str(row.tenant_id), "webhook": str(row.id), "secret": secret}
        return self.cipher.encrypt(json.dumps(payload).encode()).decode()

    def secret(self, row: Webhook) -> str | None:
        """The signing secret (None: another key, or a ciphertext moved from another row)."""
        assert self.cipher is not None
        try:
            data = json.loads(self.cipher.decrypt(row.ciphertext.encode()))
        except (InvalidToken, ValueError):
            return None
        if data.get("tenant") != str(row.tenant_id) or data.get("webhook") != str(row.id):
            return None
        return str(data["secret"])

    async def create(
        self, tenant_id: uuid.UUID, url: str, events: builtins.list[str], description: str | None
    ) -> tuple[Webhook, str]:
        """The new webhook and its secret (returned this once; only its ciphertext is kept)."""
        secret = new_secret()
        row = Webhook(id=uuid.uuid4(), tenant_id=tenant_id, url=url, events=events, description=description)
        row.ciphertext = self._seal(row, secret)
        self.session.add(row)
        await self.session.flush()
        return row, secret

    async def list(self, tenant_id: uuid.UUID) -> builtins.list[Webhook]:
        rows = await self.session.scalars(
            select(Webhook).where(Webhook.tenant_id == tenant_id).order_by(Webhook.created_at, Webhook.id)
        )
        return builtins.list(rows)

    async def get(self, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook | None:
        return await self.session.scalar(
            select(Webhook).where(Webhook.tenant_id == tenant_id, Webhook.id == webhook_id)
        )

    async def delete(self, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
        await self.session.execute(delete(D).where(D.tenant_id == tenant_id, D.webhook_id == webhook_id))
        result = await self.session.execute(
            delete(Webhook).where(Webhook.tenant_id == tenant_id, Webhook.id == webhook_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def deliveries(
        self, tenant_id: uuid.UUID, webhook_id: uuid.UUID, limit: int = 100
    ) -> builtins.list[WebhookDelivery]:
        """Newest first."""
        rows = await self.session.scalars(
            select(D).where(D.tenant_id == tenant_id, D.webhook_id == webhook_id).order_by(D.id.desc()).limit(limit)
        )
        return builtins.list(rows)


async def enqueue(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    event_type: str,
    data: dict[str, Any],
    call_id: uuid.UUID | None = None,
    agent_id: uuid.UUID | None = None,
) -> int:
    """Outbox rows for every webhook of the tenant subscribed to ``event_type``, in the caller's transaction;
    how many. The event (one id for all its webhooks) is fixed now, so a retry sends the same bytes' content."""
    hooks = builtins.list(await session.scalars(select(Webhook).where(Webhook.tenant_id == tenant_id)))
    hooks = [h for h in hooks if event_type in (h.events or ())]
    if not hooks:
        return 0
    if agent_id is None and call_id is not None:
        agent_id = await session.scalar(select(Call.agent_id).where(Call.id == call_id, Call.tenant_id == tenant_id))
    now, event_id = utcnow(), uuid.uuid4()
    payload = {
        "id": str(event_id),
        "type": event_type,
        "created_at": now.isoformat(),
        "call_id": str(call_id) if call_id else None,
        "agent_id": str(agent_id) if agent_id else None,
        "data": data,
    }
    for hook in hooks:
        session.add(
            D(webhook_id=hook.id, tenant_id=tenant_id, event_id=event_id, event_type=event_type, call_id=call_id,
              payload=payload, status="pending", attempts=0, next_attempt_at=now, created_at=now)
        )  # fmt: skip
    await session.flush()
    return len(hooks)


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the lease on, with what it needs to send it."""

    id: int
    attempts: int
    url: str
    payload: dict[str, Any]
    webhook: Webhook


async def claim(session: AsyncSession, worker: str, lease_s: float, batch: int) -> builtins.list[Claimed]:
    """Leases up to ``batch`` due deliveries (each the next one of its call) to ``worker``."""
    now = utcnow()
    earlier = aliased(D)
    blocked = exists().where(
        earlier.webhook_id == D.webhook_id, earlier.call_id == D.call_id, earlier.id < D.id, earlier.status == "pending"
    )
    free = or_(D.lease_until.is_(None), D.lease_until < now)
    ids = (await session.scalars(
        select(D.id).where(D.status == "pending", D.next_attempt_at <= now, free, ~blocked).order_by(D.id).limit(batch)
    )).all()  # fmt: skip
    mine: builtins.list[int] = []
    for row_id in ids:  # one conditional update each: of two workers racing for a row, one wins it
        result = await session.execute(
            update(D)
            .where(D.id == row_id, D.status == "pending", free)
            .values(lease_until=now + timedelta(seconds=lease_s), leased_by=worker)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            mine.append(row_id)
    if not mine:
        return []
    rows = await session.execute(select(D, Webhook).join(Webhook, Webhook.id == D.webhook_id).where(D.id.in_(mine)))
    return sorted((Claimed(d.id, d.attempts, w.url, d.payload, w) for d, w in rows), key=lambda c: c.id)


async def finish(
    session: AsyncSession,
    worker: str,
    row_id: int,
    *,
    status: str,
    attempts: int,
    next_attempt_at: datetime | None,
    response_code: int | None,
    latency_ms: float | None,
    error: str | None,
) -> None:
    """Records an attempt's outcome and frees the lease (only while this worker still holds it)."""
    values: dict[str, Any] = {
        "status": status, "attempts": attempts, "lease_until": None, "leased_by": None,
        "response_code": response_code, "latency_ms": latency_ms, "error": (error or None) and error[:500],
    }  # fmt: skip
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    if status != "pending":
        values["finished_at"] = utcnow()
    await session.execute(update(D).where(D.id == row_id, D.leased_by == worker).values(**values))


async def release(session: AsyncSession, worker: str) -> None:
    """Frees the leases of a stopping worker, so the next one need not wait for them to expire."""
    await session.execute(update(D).where(D.leased_by == worker, D.status == "pending").values(lease_until=None))

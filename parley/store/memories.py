"""Caller memories: per tenant, per caller key (a normalised phone number, or ``user:<id>`` for a client-given
user id), the summary and facts an agent remembers, and the erasure markers that keep an erased memory from being
written back by a call in flight."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import CallerErasure, CallerMemory, utcnow

ERASURE_KEPT = timedelta(days=1)  # longer than any call lasts: a call that began before the erasure has ended
_SEPARATORS = re.compile(r"[\s\-()]")
_PHONE = re.compile(r"^\+?[0-9]{3,20}$")
#: a client-given user id (an app's logged-in user): what the talk token and ``?user_id=`` accept
USER_ID_PATTERN = r"^[A-Za-z0-9._@:+-]{1,64}$"
_USER_ID = re.compile(USER_ID_PATTERN)
USER_PREFIX = "user:"
KEY_MAX = 64  # caller_memories.caller_key is String(64)


def caller_key(raw: str | None) -> str | None:
    """The key a caller is remembered by: the number without spaces, dashes or parentheses (a leading +
    kept), so ``+1 (555) 010-0100`` and ``+15550100100`` are one caller. None: not a phone number (an IP
    address from the talk WebSocket, a SIP user name), which is never remembered."""
    if not raw:
        return None
    key = _SEPARATORS.sub("", raw.strip())
    if key.lower().startswith("tel:"):
        key = key[4:]
    return key if _PHONE.match(key) else None


def valid_user_id(user_id: object) -> bool:
    return isinstance(user_id, str) and _USER_ID.fullmatch(user_id) is not None


def user_key(user_id: str) -> str:
    """The key a user id is remembered by: ``user:<id>``; an id too long for the column (over 59 characters)
    is stored as ``user:#`` and a digest of it (``#`` is no id character: it cannot meet a real id's key)."""
    if not valid_user_id(user_id):
        raise ValueError("a user id is 1 to 64 characters of A-Z a-z 0-9 . _ @ : + -")
    key = f"{USER_PREFIX}{user_id}"
    return key if len(key) <= KEY_MAX else f"{USER_PREFIX}#{_digest(user_id)[: KEY_MAX - len(USER_PREFIX) - 1]}"


def memory_key(caller: str | None, user_id: str | None = None) -> str | None:
    """The call's memory key: the user id's when the client gave one (it wins over the number), else the
    caller's number (:func:`caller_key`); None: nothing to remember the caller by."""
    return user_key(user_id) if user_id is not None else caller_key(caller)


def named_key(name: str) -> str | None:
    """The key the API names a caller by: ``user:<id>`` or a phone number; None when it is neither."""
    if name.startswith(USER_PREFIX):
        user_id = name[len(USER_PREFIX) :]
        return user_key(user_id) if valid_user_id(user_id) else None
    return caller_key(name)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class MemoryRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: uuid.UUID, key: str) -> CallerMemory | None:
        return await self.session.scalar(
            select(CallerMemory).where(CallerMemory.tenant_id == tenant_id, CallerMemory.caller_key == key)
        )

    async def erased_since(self, tenant_id: uuid.UUID, key: str, since: datetime) -> bool:
        """Whether the caller's memory was erased at or after ``since`` (a call's start)."""
        at = await self.session.scalar(
            select(CallerErasure.erased_at).where(
                CallerErasure.tenant_id == tenant_id, CallerErasure.key_digest == _digest(key)
            )
        )
        return at is not None and at >= since

    async def save(
        self, tenant_id: uuid.UUID, key: str, summary: str, facts: dict[str, Any], call_started: datetime
    ) -> CallerMemory | None:
        """Writes the memory after a call that began at ``call_started``; None (nothing written) when the memory
        was erased since then: the erasure wins over the call that was under way."""
        if await self.erased_since(tenant_id, key, call_started):
            return None
        row = await self.get(tenant_id, key)
        if row is None:
            row = CallerMemory(tenant_id=tenant_id, caller_key=key, summary=summary, facts=facts, calls=1)
            try:
                async with self.session.begin_nested():
                    self.session.add(row)
                    await self.session.flush()
                return row
            except IntegrityError:  # another call from the same caller wrote it first: update that one
                row = await self.get(tenant_id, key)
                if row is None:
                    return None
        row.summary, row.facts, row.calls, row.updated_at = summary, facts, row.calls + 1, utcnow()
        await self.session.flush()
        return row

    async def erase(self, tenant_id: uuid.UUID, key: str) -> bool:
        """Deletes the caller's memory and marks the erasure (calls in flight then write nothing); whether there
        was a memory. Markers older than :data:`ERASURE_KEPT` are pruned here."""
        now = utcnow()
        result = await self.session.execute(
            delete(CallerMemory).where(CallerMemory.tenant_id == tenant_id, CallerMemory.caller_key == key)
        )
        await self.session.execute(
            delete(CallerErasure).where(
                CallerErasure.tenant_id == tenant_id, CallerErasure.erased_at < now - ERASURE_KEPT
            )
        )
        marker = await self.session.get(CallerErasure, (tenant_id, _digest(key)))
        if marker is None:
            try:
                async with self.session.begin_nested():  # a second erasure at the same moment: it marks the time
                    self.session.add(CallerErasure(tenant_id=tenant_id, key_digest=_digest(key), erased_at=now))
                    await self.session.flush()
            except IntegrityError:
                marker = await self.session.get(CallerErasure, (tenant_id, _digest(key)), populate_existing=True)
        if marker is not None:
            marker.erased_at = now
        await self.session.flush()
        return bool(getattr(result, "rowcount", 0))

"""Phone numbers (and SIP users) mapped to agents: how a call that names only a number finds its agent."""

from __future__ import annotations

import builtins
import re
import uuid

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.errors import Conflict
from parley.store.models import PhoneNumber, utcnow

_DIGITS = re.compile(r"[\s().\-]")


def normalize_number(number: str) -> str:
    """One spelling per number: ``+1 (555) 010-0000`` and ``+15550100000`` are the same; SIP users stay as
    written (lower case)."""
    n = number.strip()
    if n.startswith("sip:") or n.startswith("sips:"):
        n = n.split(":", 1)[1].split("@", 1)[0]
    cleaned = _DIGITS.sub("", n)
    if re.fullmatch(r"\+?\d+", cleaned):
        return cleaned
    return n.lower()


class NumberRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, tenant_id: uuid.UUID, number: str, agent_id: uuid.UUID) -> PhoneNumber:
        row = PhoneNumber(
            id=uuid.uuid4(), tenant_id=tenant_id, number=normalize_number(number), agent_id=agent_id,
            created_at=utcnow(),
        )  # fmt: skip
        self.session.add(row)
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            raise Conflict(f"number {row.number} is already mapped") from None
        return row

    async def list(self, tenant_id: uuid.UUID) -> builtins.list[PhoneNumber]:
        rows = await self.session.scalars(
            select(PhoneNumber).where(PhoneNumber.tenant_id == tenant_id).order_by(PhoneNumber.number)
        )
        return list(rows)

    async def delete(self, tenant_id: uuid.UUID, number: str) -> bool:
        result = await self.session.execute(
            delete(PhoneNumber).where(
                PhoneNumber.tenant_id == tenant_id, PhoneNumber.number == normalize_number(number)
            )
        )
        return bool(getattr(result, "rowcount", 0))

    async def lookup(self, number: str) -> PhoneNumber | None:
        """The mapping for a dialled number, whichever tenant owns it (numbers are unique)."""
        n = normalize_number(number)
        candidates = {n, n.lstrip("+")} | ({"+" + n} if n.isdigit() else set())
        return await self.session.scalar(select(PhoneNumber).where(PhoneNumber.number.in_(candidates)).limit(1))

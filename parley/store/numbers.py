"""Phone numbers (and SIP users) mapped to agents: how a call that names only a number finds its agent."""

from __future__ import annotations

import builtins
import re
import uuid

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.errors import Conflict
from parley.store.models import NumberOwner, PhoneNumber, Tenant, utcnow

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


def _spellings(number: str) -> set[str]:
    """The stored spellings a dialled number may match (carriers send E.164 with or without the ``+``)."""
    n = normalize_number(number)
    return {n, n.lstrip("+")} | ({"+" + n} if n.isdigit() else set())


class NotOwned(Exception):
    """The tenant does not own the number: only the operator assigns numbers to tenants."""


class NumberRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, tenant_id: uuid.UUID, number: str, agent_id: uuid.UUID) -> PhoneNumber:
        """Maps a number the tenant owns to its agent; ``NotOwned`` otherwise, so no tenant can take another's
        calls by mapping its number first."""
        if await self.owner(number) != tenant_id:
            raise NotOwned(
                f"number {normalize_number(number)} is not assigned to this tenant; the operator assigns numbers "
                "(parley admin numbers assign NUMBER --tenant TENANT)"
            )
        row = PhoneNumber(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            number=normalize_number(number),
            agent_id=agent_id,
            created_at=utcnow(),
        )
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
        return await self.session.scalar(select(PhoneNumber).where(PhoneNumber.number.in_(_spellings(number))).limit(1))

    async def owner(self, number: str) -> uuid.UUID | None:
        """The tenant the operator assigned the number (in any of its spellings) to, if any."""
        return await self.session.scalar(
            select(NumberOwner.tenant_id).where(NumberOwner.number.in_(_spellings(number))).limit(1)
        )

    async def assign(self, number: str, tenant_id: uuid.UUID) -> NumberOwner:
        """Gives the number to the tenant (the operator's decision); ``Conflict`` if another tenant owns it
        (unassign it first: that also removes the other tenant's mapping)."""
        n = normalize_number(number)
        owner = await self.owner(n)
        if owner is not None and owner != tenant_id:
            raise Conflict(f"number {n} is assigned to another tenant; unassign it first")
        row = await self.session.get(NumberOwner, n)
        if row is None:
            row = NumberOwner(number=n, tenant_id=tenant_id, assigned_at=utcnow())
            self.session.add(row)
            await self.session.flush()
        return row

    async def unassign(self, number: str) -> bool:
        """Takes the number from its owner, and its mapping with it: calls to it reach no agent until it is
        assigned and mapped again."""
        spellings = _spellings(number)
        await self.session.execute(delete(PhoneNumber).where(PhoneNumber.number.in_(spellings)))
        result = await self.session.execute(delete(NumberOwner).where(NumberOwner.number.in_(spellings)))
        return bool(getattr(result, "rowcount", 0))

    async def owners(self, tenant_id: uuid.UUID | None = None) -> builtins.list[tuple[str, str]]:
        """(number, tenant name) pairs, by number; only ``tenant_id``'s when given."""
        stmt = select(NumberOwner.number, Tenant.name).join(Tenant, Tenant.id == NumberOwner.tenant_id)
        if tenant_id is not None:
            stmt = stmt.where(NumberOwner.tenant_id == tenant_id)
        rows = await self.session.execute(stmt.order_by(NumberOwner.number))
        return [(number, name) for number, name in rows]

"""Call records: the call, its turns (rewritten as they progress) and its events.

Turns and events carry ``tenant_id`` too, so a tenant's reads never need a join to
stay inside the tenant; writes check the call is the tenant's first.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from parley.pipeline.frames import EndReason
from parley.store.call_filters import CallFilter, count_calls, list_calls
from parley.store.errors import NotFound
from parley.store.models import Call, CallEvent, Turn, utcnow


class CallStatus(StrEnum):
    """A call record's ``status`` (the column holds the value)."""

    DIALING = "dialing"  # an outbound call, placed and not yet answered
    ACTIVE = "active"
    ENDED = "ended"
    FAILED = "failed"


STATUSES = tuple(s.value for s in CallStatus)
#: a call its worker may still be running
UNFINISHED = (CallStatus.ACTIVE, CallStatus.DIALING)


def checked_status(status: str) -> str:
    """``status`` as the plain string the column stores; ValueError if it is not a :class:`CallStatus`."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    return str(status)


class CallRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _require(self, tenant_id: uuid.UUID, call_id: uuid.UUID) -> None:
        found = await self.session.scalar(select(Call.id).where(Call.tenant_id == tenant_id, Call.id == call_id))
        if found is None:
            raise NotFound(f"call {call_id} not found")

    async def create(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        agent_version: int,
        agent_name: str,
        transport: str,
        caller: str | None = None,
        *,
        direction: str = "inbound",
        called: str | None = None,
        provider_call_id: str | None = None,
        worker_id: str | None = None,
        status: CallStatus = CallStatus.ACTIVE,
        call_id: uuid.UUID | None = None,
    ) -> Call:
        value = checked_status(status)
        call = Call(
            id=call_id or uuid.uuid4(),
            direction=direction,
            called=called,
            provider_call_id=provider_call_id,
            worker_id=worker_id,
            tenant_id=tenant_id,
            agent_id=agent_id,
            agent_version=agent_version,
            agent_name=agent_name,
            transport=transport,
            status=value,
            caller=caller,
            started_at=utcnow(),
        )
        self.session.add(call)
        await self.session.flush()
        return call

    async def upsert_turn(
        self,
        tenant_id: uuid.UUID,
        call_id: uuid.UUID,
        turn: int,
        caller_text: str,
        agent_text: str,
        agent_text_generated: str,
        interrupted: bool,
        times: dict[str, float],
        voice_to_voice: float | None,
        checked: bool = False,
        citations: list[dict[str, Any]] | None = None,
    ) -> None:
        """Writes turn ``turn`` of the call, replacing what was there; ``NotFound`` if not this tenant's call.

        ``checked``: the caller created this call for this tenant itself (a live call's writer), so the
        ownership query is skipped.
        """
        if not checked:
            await self._require(tenant_id, call_id)
        values: dict[str, Any] = {
            "caller_text": caller_text,
            "agent_text": agent_text,
            "agent_text_generated": agent_text_generated,
            "interrupted": interrupted,
            "times": dict(times),
            "voice_to_voice": voice_to_voice,
            "citations": citations or None,
            "updated_at": utcnow(),
        }
        insert = pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        stmt = insert(Turn).values(call_id=call_id, tenant_id=tenant_id, turn=turn, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["call_id", "turn"], set_=values)
        await self.session.execute(stmt)

    async def add_event(
        self,
        tenant_id: uuid.UUID,
        call_id: uuid.UUID,
        t: float,
        kind: str,
        data: dict[str, Any],
        checked: bool = False,
    ) -> CallEvent:
        """Appends an event ``t`` seconds into the call; ``NotFound`` if not this tenant's call (``checked``:
        see :meth:`upsert_turn`)."""
        if not checked:
            await self._require(tenant_id, call_id)
        event = CallEvent(call_id=call_id, tenant_id=tenant_id, t=t, kind=kind, data=data, created_at=utcnow())
        self.session.add(event)
        if not checked:
            await self.session.flush()
        return event

    async def end(
        self,
        tenant_id: uuid.UUID,
        call_id: uuid.UUID,
        status: CallStatus,
        end_reason: str | None,
        duration_s: float | None,
        recording_key: str | None = None,
        recording_bytes: int | None = None,
    ) -> Call | None:
        """Closes the record; None if the call is not this tenant's."""
        value = checked_status(status)
        call = await self.get(tenant_id, call_id)
        if call is None:
            return None
        call.status = value
        call.ended_at = utcnow()
        call.end_reason = end_reason
        call.duration_s = duration_s
        call.recording_key = recording_key
        call.recording_bytes = recording_bytes
        await self.session.flush()
        return call

    async def activate(
        self, tenant_id: uuid.UUID, call_id: uuid.UUID, worker_id: str | None, provider_call_id: str | None = None
    ) -> Call | None:
        """A dialled (outbound) call was answered and its media arrived at ``worker_id``."""
        call = await self.get(tenant_id, call_id)
        if call is None or call.status != CallStatus.DIALING:
            return None
        call.status = CallStatus.ACTIVE.value
        call.worker_id = worker_id
        if provider_call_id:
            call.provider_call_id = provider_call_id
        await self.session.flush()
        return call

    async def by_provider_id(self, transport: str, provider_call_id: str) -> Call | None:
        """The call a carrier's callback is about. Carriers name only their own id, so this lookup spans
        tenants; callers authenticate the callback (a signature) before using it."""
        return await self.session.scalar(
            select(Call)
            .where(Call.transport == transport, Call.provider_call_id == provider_call_id)
            .order_by(Call.started_at.desc())
            .limit(1)
        )

    async def unfinished(self, worker_id: str | None = None) -> builtins.list[Call]:
        """Calls still 'active' or 'dialing' that ``worker_id`` was running (all of them when None).

        A worker restarting under a stable id (a hostname, a StatefulSet pod) finds only its own calls; other
        workers' calls go on. Calls recorded with no worker (talk calls before they named theirs) count as
        every worker's: nothing else would ever close them.
        """
        query = select(Call).where(Call.status.in_(UNFINISHED))
        if worker_id is not None:
            query = query.where(or_(Call.worker_id == worker_id, Call.worker_id.is_(None)))
        return builtins.list(await self.session.scalars(query.order_by(Call.started_at)))

    async def last_activity(self, call: Call) -> datetime:
        """When the call was last known alive: its latest turn or event write, else its start."""
        turn = await self.session.scalar(select(func.max(Turn.updated_at)).where(Turn.call_id == call.id))
        event = await self.session.scalar(select(func.max(CallEvent.created_at)).where(CallEvent.call_id == call.id))
        return max(t for t in (call.started_at, turn, event) if t is not None)

    async def close_unfinished(
        self,
        call_id: uuid.UUID,
        reason: str,
        ended_at: datetime,
        recording_key: str | None = None,
        recording_bytes: int | None = None,
    ) -> bool:
        """Ends a call its worker never ended, at ``ended_at`` (the last sign of life, not now: the downtime is
        no part of the call); False if it was ended meanwhile."""
        call = await self.session.scalar(
            select(Call).where(Call.id == call_id, Call.status.in_(UNFINISHED)).with_for_update()
        )
        if call is None:
            return False
        ended_at = max(ended_at, call.started_at)
        call.status, call.ended_at, call.end_reason = CallStatus.ENDED.value, ended_at, reason
        call.duration_s = (ended_at - call.started_at).total_seconds()
        if recording_key is not None:
            call.recording_key, call.recording_bytes = recording_key, recording_bytes
        await self.session.flush()
        return True

    async def end_stale(self, reason: str = EndReason.SERVER_RESTART, worker_id: str | None = None) -> int:
        """Ends the calls :meth:`unfinished` finds at their last sign of life, so a crash leaves complete
        records (``parley.calls.recovery`` does this and recovers their recordings too)."""
        n = 0
        for call in await self.unfinished(worker_id):
            n += await self.close_unfinished(call.id, reason, await self.last_activity(call))
        return n

    async def list(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID | None = None,
        status: CallStatus | str | None = None,
        transport: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        q: str | None = None,
        analysis_success: bool | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        match: CallFilter | None = None,
    ) -> builtins.list[Call]:
        """The tenant's calls, newest first. ``since`` is inclusive and ``until`` exclusive (on
        ``started_at``); ``q`` finds calls whose turns contain the text, case-insensitively. ``match`` (every
        filter, :class:`~parley.store.call_filters.CallFilter`) replaces the keyword filters."""
        if match is None:
            value = None if status is None else str(status)
            match = CallFilter(
                agent_id=agent_id, status=value, transport=transport, since=since, until=until, q=q,
                analysis_success=analysis_success,
            )  # fmt: skip
        return await list_calls(self.session, tenant_id, match, limit, offset)

    async def count(self, tenant_id: uuid.UUID, match: CallFilter) -> int:
        """How many of the tenant's calls ``match``."""
        return await count_calls(self.session, tenant_id, match)

    async def request_hangup(self, tenant_id: uuid.UUID, call_id: uuid.UUID) -> Call | None:
        """Flags an unfinished call for its worker to end (``parley.calls.hangups`` polls the flag); returns the
        call as it is (ended: unflagged), None if it is not this tenant's."""
        call = await self.get(tenant_id, call_id)
        if call is None or call.status not in UNFINISHED:
            return call
        if call.hangup_requested_at is None:
            call.hangup_requested_at = utcnow()
            await self.session.flush()
        return call

    async def set_analysis(self, tenant_id: uuid.UUID, call_id: uuid.UUID, analysis: dict[str, Any]) -> bool:
        """Stores the call's post-call analysis (its ``success``, if any, for the list filter); False if the call
        is not this tenant's."""
        call = await self.get(tenant_id, call_id)
        if call is None:
            return False
        success = analysis.get("success")
        call.analysis = dict(analysis)
        call.analysis_success = success if isinstance(success, bool) else None
        await self.session.flush()
        return True

    async def get(self, tenant_id: uuid.UUID, call_id: uuid.UUID) -> Call | None:
        return await self.session.scalar(select(Call).where(Call.tenant_id == tenant_id, Call.id == call_id))

    async def turns(self, tenant_id: uuid.UUID, call_id: uuid.UUID) -> builtins.list[Turn]:
        rows = await self.session.scalars(
            select(Turn).where(Turn.tenant_id == tenant_id, Turn.call_id == call_id).order_by(Turn.turn)
        )
        return builtins.list(rows)

    async def events(self, tenant_id: uuid.UUID, call_id: uuid.UUID) -> builtins.list[CallEvent]:
        rows = await self.session.scalars(
            select(CallEvent)
            .where(CallEvent.tenant_id == tenant_id, CallEvent.call_id == call_id)
            .order_by(CallEvent.t, CallEvent.id)
        )
        return builtins.list(rows)

    async def delete(self, tenant_id: uuid.UUID, call_id: uuid.UUID) -> Call | None:
        """Deletes the call (its turns and events go by cascade) and returns it, so the caller can
        delete its recording; None if not this tenant's."""
        call = await self.get(tenant_id, call_id)
        if call is None:
            return None
        await self.session.execute(delete(Call).where(Call.tenant_id == tenant_id, Call.id == call_id))
        self.session.expunge(call)
        return call

"""Watching and ending a live call: its events as Server-Sent Events, and the operator's hang-up.

Both work whichever worker runs the call. The stream polls the database (every worker writes its calls' events
there as they happen), so any worker can serve it; the hang-up sets a flag that the call's worker polls
(:mod:`parley.calls.hangups`), and ends the call at once when it runs on the worker that got the request.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select

from parley.api.deps import ReadCalls, State, WriteCalls
from parley.api.schemas import EventOut
from parley.api.state import AppState
from parley.calls.hangups import LIVE_CALLS
from parley.store.calls import UNFINISHED, CallRepo
from parley.store.models import Call, CallEvent

router = APIRouter(prefix="/v1/calls", tags=["calls"])

POLL_S = 0.5  # how often a stream looks for new events
KEEPALIVE_S = 15.0  # a comment this often keeps proxies from closing a quiet stream
MAX_STREAM_S = 4 * 3600  # then the stream closes (without ``end``): a client reconnects if it still cares
PAGE = 500  # events per query: a long call's history is sent in pages
MAX_STREAMS = 200  # per worker: each costs two small queries per POLL_S
_open_streams = 0


class HangupAccepted(BaseModel):
    requested: bool = True


_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "``event: <kind>`` / ``data: <event JSON>`` per event, then ``event: end`` / "
        '``data: {"status": …, "end_reason": …}`` once the call has ended; ``: keepalive`` comments meanwhile',
    },
    404: {"description": "no such call"},
    503: {"description": "this worker serves as many streams as it may"},
}


@router.get("/{call_id}/events/stream", response_class=StreamingResponse, responses=_STREAM_DOC)
async def event_stream(
    call_id: uuid.UUID,
    who: ReadCalls,
    state: State,
    request: Request,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=2**31 - 1, description="resume after this event (the ``id:`` of the last one read)")
    ] = None,
) -> StreamingResponse:
    """Every event of the call, those already written and then new ones as they are written, as Server-Sent
    Events (each with its ``id:``); ends with ``event: end`` when the call has ended. Read it with ``fetch()`` (an
    ``EventSource`` cannot send the bearer header); after a drop, send ``Last-Event-ID`` to skip what was read."""
    async with state.db.session() as s:
        if await CallRepo(s).get(who.tenant_id, call_id) is None:
            raise HTTPException(status_code=404, detail="call not found")
    if _open_streams >= MAX_STREAMS:
        raise HTTPException(status_code=503, detail="too many event streams open here: try again later")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    body = _events(state, who.tenant_id, call_id, request, last_event_id or 0)
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def _events(
    state: AppState, tenant_id: uuid.UUID, call_id: uuid.UUID, request: Request, last_id: int
) -> AsyncIterator[str]:
    """The stream: pages of events after the last one sent, until the call has ended and all are out."""
    global _open_streams
    _open_streams += 1
    try:
        started = time.monotonic()
        last_sent = started
        while time.monotonic() - started < MAX_STREAM_S:
            # the call's state first: events written before it ended are then all in the query that follows
            status, events = await _poll(state, tenant_id, call_id, last_id)
            for event in events:
                last_id = event.id
                yield _message(event.kind, EventOut.model_validate(event).model_dump(mode="json"), event.id)
            if events:
                last_sent = time.monotonic()
            if len(events) == PAGE:
                continue  # more are waiting
            if status is None or status[0] not in UNFINISHED:
                ended = {"status": status[0] if status else "deleted", "end_reason": status[1] if status else None}
                yield _message("end", ended)
                return
            if time.monotonic() - last_sent >= KEEPALIVE_S:
                yield ": keepalive\n\n"
                last_sent = time.monotonic()
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)
    finally:
        _open_streams -= 1


async def _poll(
    state: AppState, tenant_id: uuid.UUID, call_id: uuid.UUID, after: int
) -> tuple[tuple[str, str | None] | None, list[CallEvent]]:
    """The call's (status, end reason), None once deleted; then up to PAGE of its events after id ``after``."""
    async with state.db.session() as s:
        row = (
            await s.execute(select(Call.status, Call.end_reason).where(Call.tenant_id == tenant_id, Call.id == call_id))
        ).first()
        events = await s.scalars(
            select(CallEvent)
            .where(CallEvent.tenant_id == tenant_id, CallEvent.call_id == call_id, CallEvent.id > after)
            .order_by(CallEvent.id)
            .limit(PAGE)
        )
        return (None if row is None else (row[0], row[1])), list(events)


def _message(kind: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One SSE message; the kind is kept to one line (a newline in it would start a new field)."""
    name = " ".join(kind.split()) or "event"
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.post("/{call_id}/hangup", status_code=202, response_model=HangupAccepted, responses={404: {}, 409: {}})
async def hang_up(call_id: uuid.UUID, who: WriteCalls, state: State) -> HangupAccepted:
    """End a live call, with end reason ``hung_up_by_operator``, whichever worker runs it (within about a second
    when it is another one). 409 when the call has already ended."""
    async with state.db.session() as s:
        call = await CallRepo(s).request_hangup(who.tenant_id, call_id)
    if call is None:
        raise HTTPException(status_code=404, detail="call not found")
    if call.status not in UNFINISHED:
        raise HTTPException(status_code=409, detail=f"the call has already {call.status}")
    LIVE_CALLS.hang_up(call_id)  # here: at once; elsewhere: its worker finds the flag
    return HangupAccepted()

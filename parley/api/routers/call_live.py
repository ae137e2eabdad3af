"""Watching and ending a live call: its events as Server-Sent Events, and the operator's hang-up.

Both work whichever worker runs the call. Every worker writes its calls' events to the database as they happen,
so any worker can serve the stream: from the database, and with Redis from the call's pub/sub channel as each
event commits (:mod:`parley.api.live_stream`). The hang-up sets a flag that the call's worker polls
(:mod:`parley.calls.hangups`); it ends the call at once when it runs on the worker that got the request, and
with Redis the holding worker is told over the bus (:mod:`parley.calls.live_bus`) without waiting for its poll.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from parley.api.deps import ReadCalls, State, WriteCalls
from parley.api.live_stream import stream
from parley.api.state import AppState
from parley.calls import live_bus
from parley.calls.hangups import LIVE_CALLS
from parley.store.calls import UNFINISHED, CallRepo

router = APIRouter(prefix="/v1/calls", tags=["calls"])

MAX_STREAMS = 200  # per worker: each costs two small queries per poll (or a Redis subscription, with the bus)
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
    """The stream (:mod:`parley.api.live_stream`), following the call's channel when this worker has the bus."""
    global _open_streams
    _open_streams += 1
    bus = live_bus.current()
    watch = bus.watch(call_id) if bus is not None else None
    try:
        async for chunk in stream(state.db, tenant_id, call_id, request, last_id, watch):
            yield chunk
    finally:
        _open_streams -= 1
        if watch is not None:
            await watch.close()


@router.post("/{call_id}/hangup", status_code=202, response_model=HangupAccepted, responses={404: {}, 409: {}})
async def hang_up(call_id: uuid.UUID, who: WriteCalls, state: State) -> HangupAccepted:
    """End a live call, with end reason ``hung_up_by_operator``, whichever worker runs it (at once over Redis
    when it is another one; within about a second by the flag's poll without it). 409 when the call has already
    ended."""
    async with state.db.session() as s:
        call = await CallRepo(s).request_hangup(who.tenant_id, call_id)
    if call is None:
        raise HTTPException(status_code=404, detail="call not found")
    if call.status not in UNFINISHED:
        raise HTTPException(status_code=409, detail=f"the call has already {call.status}")
    bus = live_bus.current()
    if not LIVE_CALLS.hang_up(call_id) and bus is not None:  # here: at once; elsewhere: told over the bus,
        await bus.hang_up_elsewhere(call_id)  # and its worker finds the flag in any case
    return HangupAccepted()

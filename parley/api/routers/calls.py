"""Calls: list with filters, one call with its turns and events, transcript, recording, delete."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import AfterValidator, ValidationError

from parley.api.deps import ReadCalls, State, WriteCalls
from parley.api.schemas import AnalysisRerun, CallCreate, CallDetail, CallOut, EventOut, TurnOut
from parley.store.blobs import BlobNotFound
from parley.store.calls import CallRepo
from parley.store.models import Call, utcnow

router = APIRouter(prefix="/v1/calls", tags=["calls"])
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
_MAX_DIGITS = 18  # any byte offset with more is past every recording (and int() refuses 4,300+ digits)


def _as_utc(value: datetime) -> datetime:
    """A date or a time without a zone means UTC; one whose UTC time is outside years 1-9999 is a 422, not a 500."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is outside years 1 to 9999 in UTC") from None


UtcTime = Annotated[datetime, AfterValidator(_as_utc)]


async def _call(state: State, tenant_id: uuid.UUID, call_id: uuid.UUID) -> Call:
    async with state.db.session() as s:
        call = await CallRepo(s).get(tenant_id, call_id)
    if call is None:
        raise HTTPException(status_code=404, detail="call not found")
    return call


@router.get("", response_model=list[CallOut])
async def list_calls(
    who: ReadCalls,
    state: State,
    agent_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    transport: Annotated[str | None, Query(max_length=20)] = None,
    since: Annotated[UtcTime | None, Query(description="ISO 8601 date or time; without a zone: UTC")] = None,
    until: Annotated[UtcTime | None, Query(description="ISO 8601 date or time; without a zone: UTC")] = None,
    q: Annotated[str | None, Query(max_length=200, description="text search in the transcript")] = None,
    analysis_success: Annotated[
        bool | None, Query(alias="analysis.success", description="the post-call analysis judged it a success")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[Call]:
    async with state.db.session() as s:
        return await CallRepo(s).list(
            who.tenant_id,
            agent_id=agent_id,
            status=status,
            transport=transport,
            since=since,
            until=until,
            q=q,
            analysis_success=analysis_success,
            limit=limit,
            offset=offset,
        )


@router.post("", response_model=CallOut, status_code=201)
async def create_call(body: CallCreate, who: WriteCalls, state: State, request: Request) -> Call:
    """Dial out: the agent calls ``to`` through ``provider`` (its credentials come from PARLEY_* settings)."""
    from parley.telephony.outbound import DialError, place_call
    from parley.telephony.routing import NoSuchAgent, resolve_target

    try:
        target = await resolve_target(state.db, agent_ref=body.agent_id, tenant_ref=str(who.tenant_id))
    except NoSuchAgent:
        raise HTTPException(status_code=404, detail="agent not found") from None
    if body.provider == "sip":
        return await _dial_sip(request, state, target, body)
    try:
        return await place_call(state, target, body.provider, body.to, body.from_, str(request.base_url))
    except DialError as exc:
        raise HTTPException(status_code=502, detail=f"{body.provider} did not place the call: {exc}"[:300]) from None


async def _dial_sip(request: Request, state: State, target: Any, body: CallCreate) -> Call:
    """Native SIP: the endpoint dials through PARLEY_SIP_TRUNK_URI and creates the record itself."""
    sip = getattr(request.app.state, "sip", None)
    if sip is None:
        raise HTTPException(status_code=502, detail="the SIP endpoint is off (PARLEY_SIP_PORT=0 or its port is taken)")
    if not state.settings.sip_trunk_uri:
        raise HTTPException(status_code=502, detail="outbound SIP calls need PARLEY_SIP_TRUNK_URI")
    call_id = await sip.dial(body.to, target, caller=body.from_)
    return await _call(state, target.tenant_id, call_id)


@router.get("/{call_id}", response_model=CallDetail)
async def get_call(call_id: uuid.UUID, who: ReadCalls, state: State) -> dict[str, Any]:
    call = await _call(state, who.tenant_id, call_id)
    async with state.db.session() as s:
        repo = CallRepo(s)
        turns = await repo.turns(who.tenant_id, call_id)
        events = await repo.events(who.tenant_id, call_id)
    return {
        **CallOut.model_validate(call).model_dump(),
        "turns": [TurnOut.model_validate(t) for t in turns],
        "events": [EventOut.model_validate(e) for e in events],
        "analysis": call.analysis,
    }


@router.post("/{call_id}/analysis", status_code=202)
async def rerun_analysis(
    call_id: uuid.UUID, who: WriteCalls, state: State, body: AnalysisRerun | None = None
) -> dict[str, Any]:
    """Runs the post-call analysis again in the background (202, ``{"status": "running"}``; ``GET`` the call for
    the result): the settings are the call's agent version's ``analysis`` (defaults when it has none) with the
    body's parts replaced. An LLM takes seconds: no request waits for one."""
    from parley.agent.analysis_settings import AnalysisSettings
    from parley.agent.document import parse_agent
    from parley.calls.analysis import start_analysis
    from parley.store.agents import AgentRepo
    from parley.store.credentials import TenantSecrets

    call = await _call(state, who.tenant_id, call_id)
    async with state.db.session() as s:
        version = await AgentRepo(s).version(who.tenant_id, call.agent_id, call.agent_version)
    if version is None:
        raise HTTPException(status_code=409, detail="the call's agent version no longer exists")
    document = parse_agent(version.document)
    settings = document.analysis or AnalysisSettings()
    if body is not None:
        try:
            settings = AnalysisSettings.model_validate({**settings.model_dump(), **body.model_dump(exclude_none=True)})
        except ValidationError as exc:
            raise RequestValidationError(
                [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": "value_error"} for e in exc.errors()]
            ) from None
    secrets = TenantSecrets(state.db, state.settings, who.tenant_id)
    running = {"status": "running", "requested_at": utcnow().isoformat()}
    async with state.db.session() as s:
        if not await CallRepo(s).set_analysis(who.tenant_id, call_id, running):  # deleted meanwhile
            raise HTTPException(status_code=404, detail="call not found")
    start_analysis(state.db, who.tenant_id, call_id, document, settings, secrets)
    return running


@router.get("/{call_id}/transcript", response_model=None)
async def transcript(
    call_id: uuid.UUID, who: ReadCalls, state: State, format: Literal["json", "text"] = "json"
) -> dict[str, Any] | PlainTextResponse:
    call = await _call(state, who.tenant_id, call_id)
    async with state.db.session() as s:
        turns = await CallRepo(s).turns(who.tenant_id, call_id)
    lines: list[dict[str, Any]] = []
    for t in turns:
        start = (t.times or {}).get("speech_end", (t.times or {}).get("first_audio_out", 0.0))
        if t.turn > 0 and t.caller_text:
            lines.append({"speaker": "caller", "turn": t.turn, "text": t.caller_text, "t": start})
        if t.agent_text:
            at = (t.times or {}).get("first_audio_out", start)
            lines.append(
                {"speaker": "agent", "turn": t.turn, "text": t.agent_text, "t": at, "interrupted": t.interrupted}
            )
    if format == "text":
        text = "\n".join(
            f"[{line['t']:7.2f}] {line['speaker']}: {line['text']}{' (interrupted)' if line.get('interrupted') else ''}"
            for line in lines
        )
        return PlainTextResponse(text + "\n")
    return {"call_id": str(call.id), "agent_name": call.agent_name, "lines": lines}


@router.get("/{call_id}/recording", response_class=StreamingResponse, responses={206: {}, 416: {}})
async def recording(
    call_id: uuid.UUID, who: ReadCalls, state: State, range: Annotated[str | None, Header()] = None
) -> Response:
    """The call as a stereo WAV (caller left, agent right); honours HTTP Range requests."""
    call = await _call(state, who.tenant_id, call_id)
    size = await state.blobs.size(call.recording_key) if call.recording_key else None
    if call.recording_key is None or size is None:
        raise HTTPException(status_code=404, detail="this call has no recording")
    start, end = _byte_range(range, size) if range else (0, size)
    status = 206 if range else 200
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        "Content-Disposition": f'attachment; filename="call-{call.id}.wav"',
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    key = call.recording_key

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in state.blobs.read(key, start, end):
                yield chunk
        except BlobNotFound:
            return

    return StreamingResponse(body(), status_code=status, media_type="audio/wav", headers=headers)


def _byte_range(header: str, size: int) -> tuple[int, int]:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as [start, end); anything else, or nothing of the file, is a 416."""
    unsatisfiable = {"Content-Range": f"bytes */{size}"}
    m = _RANGE.match(header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise HTTPException(status_code=416, detail="unsupported Range", headers=unsatisfiable)

    def number(digits: str) -> int:  # longer than _MAX_DIGITS: larger than any recording, as good as infinity
        return int(digits) if len(digits) <= _MAX_DIGITS else size + 1

    first, last = m.group(1), m.group(2)
    if first == "":  # suffix: the last N bytes
        start, end = max(0, size - number(last)), size
    else:
        start, end = number(first), min(size, number(last) + 1) if last else size
    if start >= size or start >= end:
        raise HTTPException(status_code=416, detail="range not satisfiable", headers=unsatisfiable)
    return start, end


@router.delete("/{call_id}", status_code=204)
async def delete_call(call_id: uuid.UUID, who: WriteCalls, state: State) -> Response:
    async with state.db.session() as s:
        call = await CallRepo(s).delete(who.tenant_id, call_id)
    if call is None:
        raise HTTPException(status_code=404, detail="call not found")
    if call.recording_key:
        await state.blobs.delete(call.recording_key)
    return Response(status_code=204)

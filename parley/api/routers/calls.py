"""Calls: list with filters (and its export), one call with its turns and events, transcript, delete; the recording
is :mod:`.call_media`'s, live events and hang-up :mod:`.call_live`'s."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import AfterValidator, ValidationError

from parley.api.call_export import EXPORT_DOC, export_response
from parley.api.deps import ReadCalls, State, WriteCalls
from parley.api.schemas import AnalysisRerun, CallCreate, CallDetail, CallOut, EventOut, TurnOut
from parley.store.call_filters import CallFilter
from parley.store.calls import CallRepo
from parley.store.models import Call, utcnow

router = APIRouter(prefix="/v1/calls", tags=["calls"])


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


def call_filter(
    agent_id: uuid.UUID | None = None,
    agent_version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    transport: Annotated[str | None, Query(max_length=32)] = None,
    direction: Annotated[Literal["inbound", "outbound"] | None, Query()] = None,
    end_reason: Annotated[str | None, Query(max_length=200, description="exactly, e.g. caller-hangup")] = None,
    since: Annotated[UtcTime | None, Query(description="ISO 8601 date or time; without a zone: UTC")] = None,
    until: Annotated[UtcTime | None, Query(description="ISO 8601 date or time; without a zone: UTC")] = None,
    min_duration_s: Annotated[float | None, Query(ge=0, le=1e7, description="at least this long (seconds)")] = None,
    max_duration_s: Annotated[float | None, Query(ge=0, le=1e7, description="at most this long (seconds)")] = None,
    q: Annotated[str | None, Query(max_length=200, description="text search in the transcript")] = None,
    analysis_success: Annotated[
        bool | None, Query(alias="analysis.success", description="the post-call analysis judged it a success")
    ] = None,
) -> CallFilter:
    """The filters ``GET /v1/calls`` and its export share."""
    return CallFilter(
        agent_id=agent_id, agent_version=agent_version, status=status, transport=transport, direction=direction,
        end_reason=end_reason, since=since, until=until, min_duration_s=min_duration_s,
        max_duration_s=max_duration_s, q=q, analysis_success=analysis_success,
    )  # fmt: skip


Filters = Annotated[CallFilter, Depends(call_filter)]
_TOTAL = {"x-total-count": {"description": "how many calls match, whatever the page", "schema": {"type": "integer"}}}


@router.get("", response_model=list[CallOut], responses={200: {"headers": _TOTAL}})
async def list_calls(
    who: ReadCalls,
    state: State,
    match: Filters,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[Call]:
    """The tenant's calls, newest first; ``x-total-count`` says how many match in all."""
    async with state.db.session() as s:
        repo = CallRepo(s)
        calls = await repo.list(who.tenant_id, match=match, limit=limit, offset=offset)
        if len(calls) < limit and (calls or offset == 0):
            total = offset + len(calls)  # the last page: it says how many there are without a count query
        else:
            total = await repo.count(who.tenant_id, match)
    response.headers["x-total-count"] = str(total)
    return calls


@router.get("/export", response_class=StreamingResponse, responses=EXPORT_DOC)
async def export_calls(
    who: ReadCalls, state: State, match: Filters, format: Literal["json", "csv"] = "json"
) -> StreamingResponse:
    """Every matching call (the list's filters, no page limit), streamed: a JSON array or CSV with the columns
    id, agent_name, agent_version, transport, direction, status, caller, called, started_at, ended_at, duration_s,
    end_reason, turns, v2v_p50, v2v_p95 (seconds), analysis_summary, analysis_success."""
    return export_response(state.db, who.tenant_id, match, format)


@router.post("", response_model=CallOut, status_code=201)
async def create_call(body: CallCreate, who: WriteCalls, state: State, request: Request) -> Call:
    """Dial out: the agent calls ``to`` through ``provider`` (its credentials come from PARLEY_* settings)."""
    from parley.telephony.dial import dial
    from parley.telephony.outbound import DialError
    from parley.telephony.routing import NoSuchAgent, resolve_target

    try:
        target = await resolve_target(state.db, agent_ref=body.agent_id, tenant_ref=str(who.tenant_id))
    except NoSuchAgent:
        raise HTTPException(status_code=404, detail="agent not found") from None
    try:
        return await dial(
            request.app, target, body.provider, body.to, body.from_, str(request.base_url),
            variables=body.variables, machine_detection=body.machine_detection,
        )  # fmt: skip
    except DialError as exc:
        if body.provider == "sip":  # the endpoint is off or has no trunk: the operator's setting, said as is
            raise HTTPException(status_code=502, detail=str(exc)) from None
        raise HTTPException(status_code=502, detail=f"{body.provider} did not place the call: {exc}"[:300]) from None


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


@router.delete("/{call_id}", status_code=204)
async def delete_call(call_id: uuid.UUID, who: WriteCalls, state: State) -> Response:
    async with state.db.session() as s:
        call = await CallRepo(s).delete(who.tenant_id, call_id)
    if call is None:
        raise HTTPException(status_code=404, detail="call not found")
    if call.recording_key:
        await state.blobs.delete(call.recording_key)
    return Response(status_code=204)

"""A campaign's test call and its export (a module of its own: registered before ``campaigns``' catch-all
``POST /{id}/{action}``, which would otherwise take ``test-call``)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from parley.api.campaign_schemas import TestCallIn
from parley.api.deps import ReadCalls, State, WriteCalls
from parley.api.routers.campaigns import find_campaign
from parley.api.schemas import CallOut
from parley.campaigns import export, phones
from parley.store.models import Call

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
_KINDS = ("text/csv", "application/json", "application/x-ndjson")
_EXPORT_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {kind: {} for kind in _KINDS}}}


@router.post("/{campaign_id}/test-call", response_model=CallOut, status_code=201)
async def test_call(campaign_id: uuid.UUID, body: TestCallIn, who: WriteCalls, state: State, request: Request) -> Call:
    """Dials one number now with the campaign's agent, carrier and caller id, before launching it."""
    from parley.campaigns import dialing  # the scheduler's module: loaded with the first test call
    from parley.telephony.outbound import DialError

    campaign = await find_campaign(state, who.tenant_id, campaign_id)
    try:
        to = phones.normalise(body.to, phones.region_of(campaign.caller_id))
    except phones.PhoneError as exc:
        raise HTTPException(422, detail=[{"loc": ["body", "to"], "msg": str(exc), "type": "value_error"}]) from None
    try:
        return await dialing.test_call(
            request.app, state.db, campaign, to, str(request.base_url), variables=body.variables
        )
    except dialing.TestCallRefused as exc:
        raise HTTPException(409, detail=str(exc)) from None
    except DialError as exc:
        raise HTTPException(502, detail=f"{campaign.provider} did not place the call: {exc}"[:300]) from None


@router.get("/{campaign_id}/export", response_class=StreamingResponse, responses=_EXPORT_DOC)
async def export_campaign(
    campaign_id: uuid.UUID, who: ReadCalls, state: State, format: Literal["csv", "json", "jsonl"] = "csv"
) -> StreamingResponse:
    """A row per contact: row, phone, timezone, state, outcome, attempts, the last call_id, its variables, and the
    last call's analysis as ``analysis.summary``, ``analysis.success``, ``analysis.<field>`` (CSV), streamed."""
    campaign = await find_campaign(state, who.tenant_id, campaign_id)
    name = f"campaign-{campaign.id}"
    if format == "csv":
        body, kind = export.csv_stream(state.db, campaign.id), "text/csv; charset=utf-8"
    elif format == "json":
        body, kind = export.json_array(state.db, campaign.id), "application/json"
        name += ".json"
    else:
        body, kind = export.json_lines(state.db, campaign.id), "application/x-ndjson"
    ext = {"csv": ".csv", "json": "", "jsonl": ".jsonl"}[format]
    headers = {"content-disposition": f'attachment; filename="{name}{ext}"'}
    return StreamingResponse(body, media_type=kind, headers=headers)

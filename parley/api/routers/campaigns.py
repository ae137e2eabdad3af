"""Outbound campaigns: create, upload contacts (CSV streamed, or JSON), control, progress, export, test call.

The scheduler (parley.campaigns.scheduler) dials running campaigns; these routes only change rows.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import TypeAdapter, ValidationError

from parley.api.campaign_schemas import (
    CampaignCreate,
    CampaignOut,
    CampaignPatch,
    ContactIn,
    ContactOut,
    ContactState,
    ImportReportOut,
)  # fmt: skip
from parley.api.deps import ReadCalls, State, WriteCalls
from parley.api.state import AppState
from parley.campaigns import contacts as importing
from parley.campaigns import phones
from parley.campaigns.schedule import CampaignSchedule
from parley.store.agents import AgentRepo
from parley.store.campaigns import CampaignRepo
from parley.store.models_campaigns import Campaign

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
_CONTACTS = TypeAdapter(list[ContactIn])
_TOTAL = {"x-total-count": {"description": "how many contacts match, whatever the page", "schema": {"type": "integer"}}}
_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        },
    }
}
#: status → the statuses it may move to, by action
_MOVES = {
    "start": ({"draft"}, "running"),
    "pause": ({"running"}, "paused"),
    "resume": ({"paused"}, "running"),
    "cancel": ({"draft", "running", "paused"}, "cancelled"),
}


async def find_campaign(state: AppState, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    async with state.db.session() as s:
        campaign = await CampaignRepo(s).get(tenant_id, campaign_id)
    if campaign is None:
        raise HTTPException(404, detail="campaign not found")
    return campaign


async def _out(state: AppState, campaign: Campaign, report: importing.ImportReport | None = None) -> dict[str, Any]:
    async with state.db.session() as s:
        counts = await CampaignRepo(s).counts(campaign.tenant_id, campaign.id)
    out = CampaignOut.model_validate(campaign).model_dump(by_alias=True)
    out["counts"] = counts
    out["import"] = None if report is None else ImportReportOut.model_validate(report, from_attributes=True)
    return out


def _importer(state: AppState, campaign: Campaign, region: str | None) -> importing.Importer:
    zone = CampaignSchedule.model_validate(campaign.schedule).default_timezone
    defaults = importing.Defaults(region=region or phones.region_of(campaign.caller_id), timezone=zone)
    sink = importing.store_sink(state.db, campaign.tenant_id, campaign.id)
    return importing.Importer(campaign.tenant_id, campaign.id, defaults, sink)


def _contact_values(contact: ContactIn) -> dict[str, Any]:
    return {k: v for k, v in contact.model_dump().items() if v is not None}


@router.post("", response_model=CampaignOut, status_code=201)
async def create_campaign(body: CampaignCreate, who: WriteCalls, state: State) -> dict[str, Any]:
    """A draft campaign, with its first contacts if given (the ``import`` report says what was taken)."""
    async with state.db.session() as s:
        if await AgentRepo(s).get(who.tenant_id, body.agent_id) is None:
            raise HTTPException(404, detail="agent not found")
        campaign = await CampaignRepo(s).create(
            who.tenant_id, name=body.name, agent_id=body.agent_id, provider=body.provider, caller_id=body.caller_id,
            schedule=body.schedule.model_dump(mode="json"), retry=body.retry.model_dump(mode="json"),
            voicemail=None if body.voicemail is None else body.voicemail.model_dump(mode="json"),
        )  # fmt: skip
    importer = _importer(state, campaign, None)
    report = await importing.import_list((_contact_values(c) for c in body.contacts), importer)
    return await _out(state, campaign, report)


@router.get("", response_model=list[CampaignOut])
async def list_campaigns(
    who: ReadCalls,
    state: State,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[Campaign]:
    async with state.db.session() as s:
        return await CampaignRepo(s).list(who.tenant_id, limit, offset)


@router.get("/{campaign_id}", response_model=CampaignOut)
async def get_campaign(campaign_id: uuid.UUID, who: ReadCalls, state: State) -> dict[str, Any]:
    """The campaign with its ``counts``: contacts by state and by last outcome, and the calls in flight."""
    return await _out(state, await find_campaign(state, who.tenant_id, campaign_id))


@router.patch("/{campaign_id}", response_model=CampaignOut)
async def patch_campaign(campaign_id: uuid.UUID, body: CampaignPatch, who: WriteCalls, state: State) -> dict[str, Any]:
    """Renames or changes the schedule, retry policy or voicemail; the schedule may change while running."""
    async with state.db.session() as s:
        repo = CampaignRepo(s)
        campaign = await repo.get(who.tenant_id, campaign_id, lock=True)
        if campaign is None:
            raise HTTPException(404, detail="campaign not found")
        if campaign.status in ("completed", "cancelled"):
            raise HTTPException(409, detail=f"the campaign is {campaign.status}")
        fields = {k: v for k, v in body.model_dump(mode="json", exclude_unset=True).items() if v is not None}
        campaign = await repo.update(campaign, **fields)
    return await _out(state, campaign)


@router.delete("/{campaign_id}", status_code=204)
async def delete_campaign(campaign_id: uuid.UUID, who: WriteCalls, state: State) -> Response:
    """Deletes a campaign that is not running (its call records stay)."""
    async with state.db.session() as s:
        repo = CampaignRepo(s)
        campaign = await repo.get(who.tenant_id, campaign_id, lock=True)
        if campaign is None:
            raise HTTPException(404, detail="campaign not found")
        if campaign.status == "running":
            raise HTTPException(409, detail="pause or cancel the campaign before deleting it")
        await repo.delete(campaign)
    return Response(status_code=204)


@router.post("/{campaign_id}/contacts", response_model=ImportReportOut, openapi_extra=_UPLOAD_DOC)
async def upload_contacts(
    campaign_id: uuid.UUID,
    request: Request,
    who: WriteCalls,
    state: State,
    region: Annotated[str | None, Query(min_length=2, max_length=2, pattern="^[A-Za-z]{2}$")] = None,
) -> importing.ImportReport:
    """Adds contacts to a draft or paused campaign: ``text/csv`` (streamed; a ``phone``, ``number`` or ``to``
    column, optional ``timezone``, ``language``, ``greeting``, every other column a variable) or a JSON list.
    ``region`` (ISO country) reads numbers written without ``+``; the default is the caller id's country."""
    if region is not None and not phones.valid_region(region):
        raise HTTPException(422, detail=[{"loc": ["query", "region"], "msg": "unknown region", "type": "value_error"}])
    campaign = await find_campaign(state, who.tenant_id, campaign_id)
    if campaign.status not in ("draft", "paused"):
        raise HTTPException(
            409, detail=f"contacts can be added to a draft or paused campaign, not a {campaign.status} one"
        )
    importer = _importer(state, campaign, region)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("application/json", ""):
        try:
            items = _CONTACTS.validate_python(json.loads(await request.body()))
        except (ValueError, ValidationError):
            raise HTTPException(422, detail="the body must be a JSON list of contacts, each with a phone") from None
        return await importing.import_list((_contact_values(c) for c in items), importer)
    if kind not in ("text/csv", "text/plain", "application/csv"):
        raise HTTPException(415, detail="send text/csv or application/json")
    try:
        return await importing.import_csv(request.stream(), importer)
    except importing.ImportError_ as exc:
        raise HTTPException(422, detail=str(exc)) from None


@router.get("/{campaign_id}/contacts", response_model=list[ContactOut], responses={200: {"headers": _TOTAL}})
async def list_contacts(
    campaign_id: uuid.UUID,
    who: ReadCalls,
    state: State,
    response: Response,
    contact_state: Annotated[ContactState | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[dict[str, Any]]:
    """Contacts in upload order, each with ``history`` (its attempts, each linked to its call record)."""
    campaign = await find_campaign(state, who.tenant_id, campaign_id)
    async with state.db.session() as s:
        repo = CampaignRepo(s)
        page = await repo.contacts_page(campaign.id, contact_state, limit, offset)
        total = await repo.contact_count(campaign.id, contact_state)
    response.headers["x-total-count"] = str(total)
    return [{**ContactOut.model_validate(c).model_dump(), "history": a} for c, a in page]


@router.post("/{campaign_id}/{action}", response_model=CampaignOut)
async def change_status(
    campaign_id: uuid.UUID, action: Literal["start", "pause", "resume", "cancel"], who: WriteCalls, state: State
) -> dict[str, Any]:
    """start (a draft with contacts and an existing agent), pause, resume, cancel (waiting contacts end as
    cancelled; calls under way finish). 409 when the campaign's status does not allow it."""
    allowed, to = _MOVES[action]
    async with state.db.session() as s:
        repo = CampaignRepo(s)
        campaign = await repo.get(who.tenant_id, campaign_id, lock=True)
        if campaign is None:
            raise HTTPException(404, detail="campaign not found")
        if campaign.status not in allowed:
            raise HTTPException(409, detail=f"cannot {action} a {campaign.status} campaign")
        if to == "running":
            if await AgentRepo(s).get(who.tenant_id, campaign.agent_id) is None:
                raise HTTPException(409, detail="the campaign's agent no longer exists")
            if action == "start" and not await repo.contact_count(campaign.id):
                raise HTTPException(409, detail="the campaign has no contacts")
        campaign = await repo.set_status(who.tenant_id, campaign_id, to) or campaign
    return await _out(state, campaign)

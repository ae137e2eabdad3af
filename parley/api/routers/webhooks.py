"""Webhooks: subscribe a URL to call events, list, show, delete, and read a webhook's delivery log.

Call data leaves the service through them, so changing them takes what changing calls takes (an editor with
``calls:write``); anyone who may read calls may read them and their log. The signing secret is in the creation's
answer only; no other route returns it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from parley.api.deps import ReadCalls, State, WriteCalls
from parley.net.ssrf import SCHEMES, OutboundPolicy
from parley.store.credentials import CredentialsUnavailable, cipher_for
from parley.store.models import Webhook, WebhookDelivery
from parley.webhooks import EVENT_TYPES
from parley.webhooks.store import WebhookRepo

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="http(s) URL the events are POSTed to (checked by the SSRF guard)")
    events: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES), description=", ".join(EVENT_TYPES))
    description: str | None = Field(None, max_length=500)


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret, shown once; verify X-Parley-Signature with it")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: uuid.UUID
    event_type: str
    call_id: uuid.UUID | None
    status: str = Field(description="pending (queued or waiting to retry), delivered, failed (gave up)")
    attempts: int
    response_code: int | None
    latency_ms: float | None = Field(description="of the last attempt")
    error: str | None
    created_at: datetime
    next_attempt_at: datetime
    finished_at: datetime | None


def _unprocessable(field: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": msg, "type": "value_error"}])


def _checked(body: WebhookCreate) -> tuple[str, list[str]]:
    url = body.url.strip()
    problem = OutboundPolicy.from_settings().url_problem(url)
    if problem is None and not url.lower().startswith(tuple(f"{s}://" for s in SCHEMES)):
        problem = "must use http or https"
    if problem:
        raise _unprocessable("url", f"the URL {problem}")
    unknown = [e for e in body.events if e not in EVENT_TYPES]
    if unknown:
        raise _unprocessable("events", f"unknown event types {unknown[:5]}; known: {', '.join(EVENT_TYPES)}")
    return url, list(dict.fromkeys(body.events))


def _cipher(state: State) -> Any:
    try:
        return cipher_for(state.settings)
    except CredentialsUnavailable as exc:
        raise HTTPException(503, detail=f"webhook secrets cannot be stored: {exc}") from None


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(body: WebhookCreate, who: WriteCalls, state: State) -> dict[str, Any]:
    url, events = _checked(body)
    async with state.db.session() as s:
        row, secret = await WebhookRepo(s, _cipher(state)).create(who.tenant_id, url, events, body.description)
    return {**WebhookOut.model_validate(row).model_dump(), "secret": secret}


@router.get("", response_model=list[WebhookOut])
async def list_webhooks(who: ReadCalls, state: State) -> list[Webhook]:
    async with state.db.session() as s:
        return await WebhookRepo(s).list(who.tenant_id)


async def _found(state: State, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
    async with state.db.session() as s:
        row = await WebhookRepo(s).get(tenant_id, webhook_id)
    if row is None:
        raise HTTPException(404, detail="webhook not found")
    return row


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: uuid.UUID, who: ReadCalls, state: State) -> Webhook:
    return await _found(state, who.tenant_id, webhook_id)


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: uuid.UUID, who: WriteCalls, state: State) -> Response:
    async with state.db.session() as s:
        if not await WebhookRepo(s).delete(who.tenant_id, webhook_id):
            raise HTTPException(404, detail="webhook not found")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut])
async def list_deliveries(
    webhook_id: uuid.UUID, who: ReadCalls, state: State, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[WebhookDelivery]:
    """The newest deliveries first: queued, retrying, delivered and given up."""
    await _found(state, who.tenant_id, webhook_id)
    async with state.db.session() as s:
        return await WebhookRepo(s).deliveries(who.tenant_id, webhook_id, limit)

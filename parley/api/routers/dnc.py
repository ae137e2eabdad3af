"""The tenant's do-not-call list: numbers no campaign dials (checked at import and before every dial)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from parley.api.campaign_schemas import DncIn, DncOut
from parley.api.deps import ReadCalls, State, WriteCalls
from parley.campaigns import phones
from parley.store.dnc import DncRepo
from parley.store.models_campaigns import DoNotCall

router = APIRouter(prefix="/v1/do-not-call", tags=["campaigns"])


def _number(text: str) -> str:
    try:
        return phones.normalise(text)
    except phones.PhoneError as exc:
        raise HTTPException(422, detail=[{"loc": ["phone"], "msg": str(exc), "type": "value_error"}]) from None


@router.get("", response_model=list[DncOut])
async def list_dnc(
    who: ReadCalls,
    state: State,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[DoNotCall]:
    async with state.db.session() as s:
        return await DncRepo(s).list(who.tenant_id, limit, offset)


@router.post("", response_model=DncOut, status_code=201)
async def add_dnc(body: DncIn, who: WriteCalls, state: State) -> DoNotCall:
    """Adds a number (E.164, with its ``+``); adding it again updates the reason."""
    phone = _number(body.phone)
    async with state.db.session() as s:
        return await DncRepo(s).add(who.tenant_id, phone, body.reason)


@router.delete("/{phone}", status_code=204)
async def delete_dnc(phone: str, who: WriteCalls, state: State) -> Response:
    async with state.db.session() as s:
        if not await DncRepo(s).delete(who.tenant_id, _number(phone)):
            raise HTTPException(404, detail="number not on the list")
    return Response(status_code=204)

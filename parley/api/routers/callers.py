"""A caller's memory: read what the tenant's agents remember about a caller, or erase it (the caller's right to
be forgotten). The caller is a phone number, URL-encoded in the path (``%2B15550100100``); any spacing works;
or ``user:<id>``, a client-given user id of the talk WebSocket (``user%3Aalice``, or ``user:alice`` as it is).

Reading takes what reading calls takes (``calls:read``), erasing what changing calls takes (``calls:write``).
An erasure also keeps a call already under way from writing the memory back (see parley.calls.memory).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel

from parley.api.deps import ReadCalls, State, WriteCalls
from parley.store.memories import MemoryRepo, caller_key, named_key

router = APIRouter(prefix="/v1/callers", tags=["callers"])

Caller = Annotated[
    str, Path(max_length=100, description="the caller's phone number, URL-encoded (+ as %2B), or user:<user id>")
]


class MemoryOut(BaseModel):
    caller: str
    summary: str
    facts: dict[str, Any]
    calls: int
    created_at: datetime
    updated_at: datetime


def _key(caller: str) -> str:
    """The stored key (a user id's may be a digest of it)."""
    key = named_key(caller)
    if key is None:
        msg = "neither a phone number nor user:<id> (1-64 characters of A-Z a-z 0-9 . _ @ : + -)"
        raise HTTPException(422, detail=[{"loc": ["path", "caller"], "msg": msg, "type": "value_error"}])
    return key


def _name(caller: str) -> str:
    """How the caller is named back: ``user:<id>`` as given, a number normalised."""
    return caller if caller.startswith("user:") else caller_key(caller) or caller


@router.get("/{caller}/memory", response_model=MemoryOut)
async def get_memory(caller: Caller, who: ReadCalls, state: State) -> MemoryOut:
    key = _key(caller)
    async with state.db.session() as s:
        row = await MemoryRepo(s).get(who.tenant_id, key)
    if row is None:
        raise HTTPException(404, detail="nothing is remembered about this caller")
    return MemoryOut(
        caller=_name(caller),
        summary=row.summary,
        facts=row.facts,
        calls=row.calls,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.delete("/{caller}/memory", status_code=204)
async def erase_memory(caller: Caller, who: WriteCalls, state: State) -> Response:
    """Erases the memory (204 whether or not there was one: a call under way is stopped from writing it too)."""
    async with state.db.session() as s:
        await MemoryRepo(s).erase(who.tenant_id, _key(caller))
    return Response(status_code=204)

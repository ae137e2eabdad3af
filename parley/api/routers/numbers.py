"""Phone numbers (and SIP users) mapped to agents: an incoming call to a number reaches its agent."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from parley.api.deps import ReadAgents, State, WriteAgents
from parley.api.routers.agents import find_agent
from parley.api.schemas import NumberCreate, NumberOut
from parley.store.agents import AgentRepo
from parley.store.errors import Conflict
from parley.store.models import PhoneNumber
from parley.store.numbers import NotOwned, NumberRepo

router = APIRouter(prefix="/v1/numbers", tags=["numbers"])


@router.post("", response_model=NumberOut, status_code=201)
async def add_number(body: NumberCreate, who: WriteAgents, state: State) -> PhoneNumber:
    """Maps a number the operator assigned to this tenant (``parley admin numbers assign``) to an agent."""
    async with state.db.session() as s:
        agent = await find_agent(AgentRepo(s), who.tenant_id, body.agent_id)
        try:
            return await NumberRepo(s).create(who.tenant_id, body.number, agent.id)
        except NotOwned as exc:  # numbers are the operator's to give, not the first mapper's to take
            raise HTTPException(status_code=403, detail=str(exc)) from None
        except Conflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None


@router.get("", response_model=list[NumberOut])
async def list_numbers(who: ReadAgents, state: State) -> list[PhoneNumber]:
    async with state.db.session() as s:
        return await NumberRepo(s).list(who.tenant_id)


@router.delete("/{number}", status_code=204)
async def delete_number(number: str, who: WriteAgents, state: State) -> Response:
    async with state.db.session() as s:
        if not await NumberRepo(s).delete(who.tenant_id, number):
            raise HTTPException(status_code=404, detail="number not found")
    return Response(status_code=204)

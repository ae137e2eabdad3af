"""Agents: create, list, get, update (every update is a new version), delete."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict

from parley.agent.document import AgentDocument
from parley.agent.storable import check_storable
from parley.api.deps import ReadAgents, State, WriteAgents
from parley.api.schemas import AgentOut, AgentVersionOut
from parley.store.agents import AgentRepo
from parley.store.errors import Conflict
from parley.store.models import Agent

router = APIRouter(prefix="/v1/agents", tags=["agents"])


async def find_agent(repo: AgentRepo, tenant_id: uuid.UUID, ref: str) -> Agent:
    """An agent by id or by name, within the tenant; 404 otherwise."""
    agent: Agent | None
    try:
        agent = await repo.get(tenant_id, uuid.UUID(ref))
    except ValueError:
        agent = await repo.by_name(tenant_id, ref)
    if agent is None:
        raise HTTPException(status_code=404, detail="agent not found")
    return agent


def _document(doc: AgentDocument) -> dict[str, object]:
    return doc.model_dump(mode="json")


@router.post("", status_code=201, response_model=AgentOut)
async def create_agent(doc: AgentDocument, who: WriteAgents, state: State) -> Agent:
    check_storable(doc, state.settings)
    async with state.db.session() as s:
        try:
            return await AgentRepo(s).create(who.tenant_id, doc.name, _document(doc))
        except Conflict:
            raise HTTPException(status_code=409, detail=f"an agent named {doc.name!r} exists") from None


@router.get("", response_model=list[AgentOut])
async def list_agents(
    who: ReadAgents,
    state: State,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[Agent]:
    async with state.db.session() as s:
        return await AgentRepo(s).list(who.tenant_id, limit=limit, offset=offset)


@router.get("/{agent_ref}", response_model=AgentOut)
async def get_agent(agent_ref: str, who: ReadAgents, state: State) -> Agent:
    async with state.db.session() as s:
        return await find_agent(AgentRepo(s), who.tenant_id, agent_ref)


@router.put("/{agent_ref}", response_model=AgentOut)
async def update_agent(agent_ref: str, doc: AgentDocument, who: WriteAgents, state: State) -> Agent:
    check_storable(doc, state.settings)
    async with state.db.session() as s:
        repo = AgentRepo(s)
        agent = await find_agent(repo, who.tenant_id, agent_ref)
        try:
            updated = await repo.update(who.tenant_id, agent.id, doc.name, _document(doc))
        except Conflict:
            raise HTTPException(status_code=409, detail=f"an agent named {doc.name!r} exists") from None
        if updated is None:
            raise HTTPException(status_code=404, detail="agent not found")
        return updated


class AgentVersionSummary(BaseModel):
    """One entry of an agent's history; its document is at ``/versions/{version}``."""

    model_config = ConfigDict(from_attributes=True)

    version: int
    created_at: datetime


@router.get("/{agent_ref}/versions", response_model=list[AgentVersionSummary])
async def agent_versions(
    agent_ref: str,
    who: ReadAgents,
    state: State,
    limit: Annotated[int, Query(ge=1, le=200, description="versions per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="versions to skip, oldest first")] = 0,
) -> list[object]:
    """A page of the history, oldest first, without documents: a long history of large documents stays a
    small answer (15 versions were 9.9 MB); one version's document is ``GET …/versions/{version}``."""
    async with state.db.session() as s:
        repo = AgentRepo(s)
        agent = await find_agent(repo, who.tenant_id, agent_ref)
        return list(await repo.versions(who.tenant_id, agent.id, limit=limit, offset=offset, documents=False))


@router.get("/{agent_ref}/versions/{version}", response_model=AgentVersionOut)
async def agent_version(
    agent_ref: str, version: Annotated[int, Path(ge=1, le=1_000_000)], who: ReadAgents, state: State
) -> object:
    async with state.db.session() as s:
        repo = AgentRepo(s)
        agent = await find_agent(repo, who.tenant_id, agent_ref)
        found = await repo.version(who.tenant_id, agent.id, version)
        if found is None:
            raise HTTPException(status_code=404, detail="no such version")
        return found


@router.delete("/{agent_ref}", status_code=204)
async def delete_agent(agent_ref: str, who: WriteAgents, state: State) -> Response:
    async with state.db.session() as s:
        repo = AgentRepo(s)
        agent = await find_agent(repo, who.tenant_id, agent_ref)
        await repo.delete(who.tenant_id, agent.id)
    return Response(status_code=204)

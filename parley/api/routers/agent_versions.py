"""An agent's history, for people editing it: two versions compared, an old version restored, a document checked.

Mounted before :mod:`parley.api.routers.agents` (module order), so ``/versions/diff`` is this router's and not
read as the version number "diff".
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from parley.agent.document import AgentDocument
from parley.agent.storable import check_storable
from parley.api.console_schemas import Validity, VersionDiff
from parley.api.deps import ReadAgents, State, WriteAgents
from parley.api.routers.agents import find_agent
from parley.api.schemas import AgentOut
from parley.config import Settings
from parley.store.agents import AgentRepo
from parley.store.errors import Conflict
from parley.store.models import Agent

router = APIRouter(prefix="/v1/agents", tags=["agents"])

VersionNumber = Annotated[int, Path(ge=1, le=1_000_000, description="a version number of the agent")]


def storable(data: dict[str, Any], settings: Settings, where: tuple[str, ...]) -> AgentDocument:
    """``data`` as an agent document a tenant may store, else the 422 ``POST /v1/agents`` answers, each field's
    location under ``where`` (``("body",)`` for a request's document, ``("body", "draft")`` for a draft)."""
    try:
        doc = AgentDocument.model_validate(data)
        check_storable(doc, settings)
    except ValidationError as exc:
        # as FastAPI words a body's errors, so the 422 is the one a create gives
        raise RequestValidationError(
            [{**e, "loc": (*where, *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    except RequestValidationError as exc:  # check_storable's, located under "body"
        raise RequestValidationError([{**e, "loc": (*where, *e["loc"][1:])} for e in exc.errors()]) from None
    return doc


def as_yaml(document: dict[str, Any]) -> list[str]:
    """The document as people read it in the console's YAML editor: keys in their order, one line each."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).splitlines(keepends=True)


@router.post("/validate", response_model=Validity)
async def validate_agent(doc: AgentDocument, who: WriteAgents, state: State) -> Validity:
    """Check a document as ``POST /v1/agents`` would (the same 422 for the same faults); nothing is saved."""
    check_storable(doc, state.settings)
    return Validity(valid=True)


@router.get("/{agent_ref}/versions/diff", response_model=VersionDiff)
async def diff_versions(
    agent_ref: str,
    who: ReadAgents,
    state: State,
    from_: Annotated[int | None, Query(alias="from", ge=1, le=1_000_000, description="default: to - 1")] = None,
    to: Annotated[int | None, Query(ge=1, le=1_000_000, description="default: the current version")] = None,
) -> VersionDiff:
    """What changed from version ``from`` to ``to``: a unified diff of the two documents as YAML; 404 if the
    agent or either version does not exist."""
    async with state.db.session() as s:
        repo = AgentRepo(s)
        agent = await find_agent(repo, who.tenant_id, agent_ref)
        new = to if to is not None else agent.version
        old = from_ if from_ is not None else max(1, new - 1)
        found = {n: await repo.version(who.tenant_id, agent.id, n) for n in {old, new}}
    if any(v is None for v in found.values()):
        missing = ", ".join(str(n) for n in sorted(found) if found[n] is None)
        raise HTTPException(status_code=404, detail=f"no such version: {missing}")
    a, b = found[old], found[new]
    assert a is not None and b is not None
    lines = difflib.unified_diff(as_yaml(a.document), as_yaml(b.document), f"version {old}", f"version {new}")
    return VersionDiff(from_=old, to=new, diff="".join(lines))


@router.post("/{agent_ref}/versions/{version}/restore", response_model=AgentOut)
async def restore_version(agent_ref: str, version: VersionNumber, who: WriteAgents, state: State) -> Agent:
    """Save version ``version``'s document as the next version (history is never rewritten), as ``PUT`` would:
    the document must still be storable (422 otherwise, located under ``document``), its name free (409)."""
    async with state.db.session() as s:
        repo = AgentRepo(s)
        agent = await find_agent(repo, who.tenant_id, agent_ref)
        old = await repo.version(who.tenant_id, agent.id, version)
        if old is None:
            raise HTTPException(status_code=404, detail="no such version")
        doc = storable(old.document, state.settings, ("document",))
        try:
            updated = await repo.update(who.tenant_id, agent.id, doc.name, doc.model_dump(mode="json"))
        except Conflict:
            raise HTTPException(status_code=409, detail=f"an agent named {doc.name!r} exists") from None
        if updated is None:
            raise HTTPException(status_code=404, detail="agent not found")
        return updated

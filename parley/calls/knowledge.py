"""A call's knowledge base, at set-up: the tenant's search, warmed, and what the call's mind gets from it.

:func:`call_knowledge` runs where the call's tenant is known (:class:`~parley.calls.live.LiveCall`); runs without
one (``parley test`` text runs, offline simulations) leave :attr:`Services.knowledge` unset, and an agent that names
collections then answers without knowledge, with one ``knowledge`` ``unavailable`` event at the call's start.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from parley.agent.document import AgentDocument
from parley.agent.knowledge_settings import KnowledgeSettings
from parley.knowledge import service
from parley.knowledge.types import Hit, KnowledgeSearch
from parley.processors.knowledge_lookup import KnowledgeLookup, facts_message, node_collections
from parley.tools.base import AgentTool
from parley.tools.knowledge_tool import KnowledgeTool, passage

if TYPE_CHECKING:
    from parley.processors.flow_steps import FlowDriver

log = structlog.get_logger(__name__)
WARM_TIMEOUT_S = 2.0


@dataclass
class CallKnowledge:
    """The tenant's knowledge as this call searches it (None: no knowledge base), and set-up's events."""

    search: KnowledgeSearch | None
    events: list[dict[str, Any]] = field(default_factory=list)
    #: the whole of the call's collections, when small enough for the system prompt (None: retrieved per turn)
    inline: list[Hit] | None = None


@dataclass
class MindKnowledge:
    """What the responder gets: the per-turn lookup (mode auto/both), the tool (tool/both), start-up events."""

    lookup: KnowledgeLookup | None = None
    tool: AgentTool | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def _event(status: str, **more: Any) -> dict[str, Any]:
    return {"type": "knowledge", "turn": 0, "status": status, **more}


def all_collections(document: AgentDocument) -> list[str]:
    """Every collection the call may search: the document's and its flow nodes'."""
    names = list(document.knowledge.collections) if document.knowledge is not None else []
    for node in document.flow.nodes.values() if document.flow is not None else ():
        names += node.knowledge or []
    return list(dict.fromkeys(names))


async def call_knowledge(
    document: AgentDocument, tenant_id: uuid.UUID, kb: service.KnowledgeBase | None = None
) -> CallKnowledge | None:
    """The tenant's search for a document that uses knowledge, warmed for its collections (at most
    :data:`WARM_TIMEOUT_S`; a failed warm-up is an event, the call goes on). None: the document uses none.
    ``kb``: a knowledge base other than the process's (offline runs: :mod:`parley.knowledge.local`)."""
    if document.knowledge is None:
        return None
    kb = kb or service.current()
    if kb is None:
        return CallKnowledge(None, [_event("unavailable")])
    try:
        search = kb.for_tenant(tenant_id)
    except Exception as exc:  # a knowledge base that cannot serve this tenant: the call answers without it
        log.warning("knowledge_unavailable", error=type(exc).__name__, detail=str(exc)[:300])
        return CallKnowledge(None, [_event("unavailable", error=type(exc).__name__)])
    collections = all_collections(document)
    try:
        async with asyncio.timeout(WARM_TIMEOUT_S):
            await search.warm(collections)
    except Exception as exc:  # searching may still work (slower, or not at all: each turn then says so)
        error = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("knowledge_warm_failed", error=error, collections=collections)
        return CallKnowledge(search, [_event("warm_failed", error=error, collections=collections)])
    return CallKnowledge(search, inline=await _whole(document, search, collections))


async def _whole(document: AgentDocument, search: KnowledgeSearch, collections: list[str]) -> list[Hit] | None:
    """The collections' whole text when the document allows it and it fits ``inline_chars``. Not for ``tool``
    mode (that agent looks up only when it needs to) nor when flow nodes name their own collections (a node's
    facts would leak into the others)."""
    settings = document.knowledge
    if settings is None or not settings.auto or settings.inline_chars <= 0:
        return None
    if collections != list(settings.collections):
        return None
    try:
        whole = await search.contents(collections, settings.inline_chars)
    except Exception as exc:  # per-turn retrieval still works, or says why not
        log.warning("knowledge_contents_failed", error=type(exc).__name__)
        return None
    return whole or None


def inline_document(document: AgentDocument, knowledge: CallKnowledge | None) -> AgentDocument:
    """The document with its small collections' facts at the end of its system prompt (see :func:`_whole`): the
    model reads them once per call, in the prefix it keeps, instead of before every reply."""
    if knowledge is None or not knowledge.inline:
        return document
    facts = facts_message([passage(hit) for hit in knowledge.inline])["content"]
    return document.model_copy(update={"system_prompt": f"{document.system_prompt.rstrip()}\n\n{facts}"})


def mind_knowledge(
    settings: KnowledgeSettings | None, knowledge: CallKnowledge | None, flow: FlowDriver | None
) -> MindKnowledge:
    """The lookup and the tool for one call's responder, as the document's ``knowledge.mode`` says."""
    if settings is None:
        return MindKnowledge()
    if knowledge is None:  # nobody opened the knowledge base for this call (no tenant, no store)
        return MindKnowledge(events=[_event("unavailable")])
    if knowledge.search is None:
        return MindKnowledge(events=list(knowledge.events))
    search = knowledge.search
    lookup = KnowledgeLookup(search, settings, inline=knowledge.inline is not None) if settings.auto else None
    tool = KnowledgeTool(search, settings, lambda: node_collections(settings, flow)) if settings.tool else None
    return MindKnowledge(lookup, tool, list(knowledge.events))

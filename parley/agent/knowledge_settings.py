"""The agent document's ``knowledge:`` block: which knowledge-base collections the agent answers from, and how.

Kept apart from :mod:`parley.agent.document` so the document gains one field; the call side is
:mod:`parley.processors.knowledge_lookup` (retrieval on each turn) and :mod:`parley.tools.knowledge_tool` (the
``search_knowledge`` tool). A flow node may name its own collections (``knowledge:`` on the node).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from parley.agent.limits import Line

MAX_COLLECTIONS = 8
KNOWLEDGE_TOOL = "search_knowledge"  # the tool mode ``tool``/``both`` offers (:mod:`parley.tools.knowledge_tool`)
#: a collection's name: one line, 1..100 characters (a name that does not exist simply has no hits)
CollectionName = Annotated[Line, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
KnowledgeMode = Literal["auto", "tool", "both"]


class KnowledgeSettings(BaseModel):
    """``mode``: ``auto`` retrieves on every turn (speculatively, at the caller's first pause), ``tool`` only
    offers the ``search_knowledge`` tool, ``both`` does both. ``budget_ms`` bounds how long a reply waits for
    retrieval (fail-open: it goes on without); ``max_chars`` bounds the retrieved text put in the prompt.
    Small collections (``inline_chars``) are given whole in the system prompt instead: a small model re-reading
    facts before every reply costs more than it saves."""

    model_config = ConfigDict(extra="forbid")

    collections: list[CollectionName] = Field(min_length=1, max_length=MAX_COLLECTIONS)
    mode: KnowledgeMode = "auto"
    top_k: int = Field(3, ge=1, le=10)
    min_score: float | None = Field(None, ge=0, le=1, description="None: the knowledge store's default threshold")
    budget_ms: int = Field(150, ge=10, le=2000, description="the longest a reply waits for retrieval")
    max_chars: int = Field(2400, ge=200, le=20_000, description="retrieved text the prompt takes at most")
    inline_chars: int = Field(
        3000,
        ge=0,
        le=20_000,
        description="collections whose whole text fits this go into the system prompt at call set-up (computed "
        "once, so no turn pays for them) and each turn's retrieval only records its citations; 0: never",
    )

    @field_validator("collections")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @property
    def auto(self) -> bool:
        return self.mode in ("auto", "both")

    @property
    def tool(self) -> bool:
        return self.mode in ("tool", "both")


#: a flow node's ``knowledge:``: the collections used while it is current ([]: no retrieval there)
NodeCollections = Annotated[list[CollectionName], Field(max_length=MAX_COLLECTIONS)]

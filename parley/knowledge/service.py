"""The process's knowledge base: opened with the service, searched by calls through :meth:`KnowledgeBase.for_tenant`.

Calls reach it through :func:`current` (set when the service opens its state), so every transport that starts a
call finds it without threading it through each one; None means no knowledge base in this process (``parley test``
text runs, a bare pipeline), and agents that name collections then answer without knowledge (with an event).

Vectors live in the database (``embedded``, the default: one process or many, since every worker reads the same
rows) or in a Chroma server (``PARLEY_KNOWLEDGE_CHROMA_URL``), which keeps the vectors of large collections out of
each worker's memory.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from parley.knowledge.cache import CollectionCache
from parley.knowledge.search import TenantKnowledge
from parley.knowledge.types import KnowledgeSearch, VectorIndex
from parley.store.db import Database
from parley.store.knowledge import KnowledgeRepo

_current: KnowledgeBase | None = None
RESOLVE_TTL_S = 1.0  # how stale a worker's idea of a collection's revision may be (an upload shows within this)


class KnowledgeBase:
    """Documents, chunks and indexes of every tenant; searching always goes through one tenant's view."""

    def __init__(self, db: Database, index: VectorIndex | None = None) -> None:
        self.db = db
        #: None: the embedded backend (vectors in the database, searched in memory)
        self.index = index
        self.cache = CollectionCache(db, with_vectors=index is None)
        self._resolved: dict[tuple[uuid.UUID, tuple[str, ...]], tuple[float, list[tuple[str, uuid.UUID, int]]]] = {}

    @property
    def backend(self) -> str:
        return "embedded" if self.index is None else self.index.name

    @classmethod
    async def open(cls, db: Database, settings: Any) -> KnowledgeBase:
        url = getattr(settings, "knowledge_chroma_url", None)
        if not url:
            return cls(db)
        from parley.knowledge.chroma_index import ChromaIndex

        token = getattr(settings, "knowledge_chroma_token", None)
        secret = token.get_secret_value() if token is not None else None
        return cls(db, await ChromaIndex.connect(url, secret))

    def for_tenant(self, tenant_id: uuid.UUID) -> KnowledgeSearch:
        return TenantKnowledge(self, tenant_id)

    async def resolve(self, tenant_id: uuid.UUID, names: Sequence[str]) -> list[tuple[str, uuid.UUID, int]]:
        """The tenant's collections among ``names`` with their revisions, read at most once a second."""
        key = (tenant_id, tuple(sorted(set(names))))
        now = time.monotonic()
        hit = self._resolved.get(key)
        if hit is not None and now - hit[0] < RESOLVE_TTL_S:
            return hit[1]
        async with self.db.session() as s:
            found = await KnowledgeRepo(s).resolve(tenant_id, key[1])
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[key] = (now, found)
        return found

    def changed(self, tenant_id: uuid.UUID) -> None:
        """This worker changed the tenant's knowledge: its next search reads the revisions again."""
        for key in [k for k in self._resolved if k[0] == tenant_id]:
            self._resolved.pop(key, None)

    async def aclose(self) -> None:
        if self.index is not None:
            await self.index.close()


def current() -> KnowledgeBase | None:
    return _current


def install(kb: KnowledgeBase | None) -> None:
    global _current
    _current = kb

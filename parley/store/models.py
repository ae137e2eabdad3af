"""Tables, portable between SQLite and PostgreSQL.

Datetimes are stored timezone-aware and always written in UTC; ``UtcDateTime``
restores the UTC zone on SQLite, whose driver drops it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column

# re-exported: repositories and tests take them from here
from parley.store.orm_base import Base as Base
from parley.store.orm_base import UtcDateTime as UtcDateTime
from parley.store.orm_base import utcnow as utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(12))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_agents_tenant_name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentVersion(Base):
    """Every saved state of an agent: a call records the version it ran, so it can be shown later."""

    __tablename__ = "agent_versions"

    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Call(Base):
    """One call. ``agent_id`` has no foreign key on purpose: call records outlive deleted agents."""

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_tenant_started", "tenant_id", "started_at"),
        Index("ix_calls_tenant_agent", "tenant_id", "agent_id"),
        Index("ix_calls_tenant_analysis_success", "tenant_id", "analysis_success"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    agent_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    agent_version: Mapped[int] = mapped_column(Integer)
    agent_name: Mapped[str] = mapped_column(String(200))
    transport: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    caller: Mapped[str | None] = mapped_column(String(200), default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    duration_s: Mapped[float | None] = mapped_column(Float, default=None)
    recording_key: Mapped[str | None] = mapped_column(String(500), default=None)
    recording_bytes: Mapped[int | None] = mapped_column(Integer, default=None)
    direction: Mapped[str] = mapped_column(String(16), default="inbound")
    called: Mapped[str | None] = mapped_column(String(200), default=None)
    #: the carrier's id for the call (Twilio CallSid, SIP Call-ID …): status callbacks find the record by it
    provider_call_id: Mapped[str | None] = mapped_column(String(200), default=None, index=True)
    #: the process that runs the call; a restarting worker closes only its own calls
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    #: the post-call analysis (parley.calls.analysis); ``analysis_success`` is its verdict, for the list filter
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    analysis_success: Mapped[bool | None] = mapped_column(Boolean, default=None)
    #: an operator asked to end the live call (POST /v1/calls/{id}/hangup); its worker polls for this
    hangup_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    #: a campaign contact's variables (the upload's columns), rendered into the agent's prompt and greeting
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("call_id", "turn", name="uq_turns_call_turn"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    turn: Mapped[int] = mapped_column(Integer)
    caller_text: Mapped[str] = mapped_column(Text, default="")
    agent_text: Mapped[str] = mapped_column(Text, default="")
    agent_text_generated: Mapped[str] = mapped_column(Text, default="")
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    times: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    voice_to_voice: Mapped[float | None] = mapped_column(Float, default=None)
    #: the knowledge-base chunks the reply was given (document, chunk, score); None: the agent has no knowledge
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CallEvent(Base):
    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    t: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PhoneNumber(Base):
    """A number (or SIP user) callers dial, mapped to the agent that answers it. Numbers are unique across
    tenants: an incoming call names only the number, and the number names the tenant."""

    __tablename__ = "phone_numbers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(200), unique=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderCredential(Base):
    """A tenant's secret for a provider (an API key), encrypted at rest; agent documents name it, never hold it.

    Write-only through the API: the ciphertext is never returned, only the name and when it was set."""

    __tablename__ = "provider_credentials"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_provider_credentials_tenant_name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NumberOwner(Base):
    """Which tenant owns a number (or SIP user), decided by the operator (``parley admin numbers assign``).

    A tenant may map only numbers it owns to its agents, so a number cannot be claimed first by another tenant."""

    __tablename__ = "number_owners"

    number: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(Base):
    """A tenant's subscription: events of the listed types are POSTed to ``url``, signed with its secret (stored
    encrypted like provider credentials; shown once, at creation). See parley.webhooks."""

    __tablename__ = "webhooks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: the durable outbox row (claimed with a lease) and, afterwards, its log entry.

    ``id`` grows with insertion, so a call's events are delivered in ``id`` order per webhook."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_call", "webhook_id", "call_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    event_type: Mapped[str] = mapped_column(String(32))
    call_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    leased_by: Mapped[str | None] = mapped_column(String(200), default=None)
    response_code: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class CallerMemory(Base):
    """What an agent remembers about a caller between calls (a tenant's, keyed by the normalised phone number):
    a short summary and facts, rewritten by the agent's LLM after each call. See parley.calls.memory."""

    __tablename__ = "caller_memories"
    __table_args__ = (UniqueConstraint("tenant_id", "caller_key", name="uq_caller_memories_tenant_caller"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    caller_key: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CallerErasure(Base):
    """When a caller's memory was erased, so a call already under way at that moment cannot write it back.

    Holds a digest of the caller key, never the number; kept a day (longer than any call), then pruned."""

    __tablename__ = "caller_memory_erasures"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- the knowledge base (parley.store.knowledge): the database is the source of truth for both vector
# backends; chunk texts always live here, vectors too with the embedded backend (``embedding``, float32 bytes).
class KnowledgeCollection(Base):
    """A tenant's named set of documents; ``revision`` grows with every change, so workers' caches know."""

    __tablename__ = "knowledge_collections"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_knowledge_collections_tenant_name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    revision: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class KnowledgeDocument(Base):
    """One document of a collection, by name (a file name or a URL). ``status``: queued, processing, ready,
    failed. Ingestion is claimed with a lease, so a worker that dies mid-way leaves it to another."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "name", name="uq_knowledge_documents_collection_name"),
        Index("ix_knowledge_documents_due", "status", "lease_until"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("knowledge_collections.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(500))
    source_url: Mapped[str | None] = mapped_column(Text, default=None)
    content_type: Mapped[str | None] = mapped_column(String(200), default=None)
    content: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, default=None))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    #: the version whose chunks are searched (0: none yet); lags ``version`` while a re-upload is ingested
    live_version: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str | None] = mapped_column(String(16), default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str] = mapped_column(String(16), default="queued")  # queued, fetching, parsing, embedding, done
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    leased_by: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class KnowledgeChunk(Base):
    __tablename__ = "knowledge_chunks"
    __table_args__ = (Index("ix_knowledge_chunks_collection", "collection_id", "document_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("knowledge_collections.id", ondelete="CASCADE"))
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("knowledge_documents.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    idx: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    heading: Mapped[str] = mapped_column(String(1000), default="")
    locator: Mapped[str] = mapped_column(String(100), default="")
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)


class TalkDraft(Base):
    """An unsaved agent document a talk token opens a session with (the console's "talk to this draft").

    Keyed by the token's signed id (``jti``), so only that token's session finds it; taken (deleted) when the
    session opens, and pruned once past ``expires_at`` (the token's expiry, and a little more)."""

    __tablename__ = "talk_drafts"

    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    #: the saved version the draft was edited from, when the token was issued
    based_on_version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


# The campaign tables live in their own module; imported here so Base.metadata holds them too.
from parley.store import models_campaigns  # noqa: E402, F401

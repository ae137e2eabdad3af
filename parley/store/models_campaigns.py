"""Campaign tables: a campaign, its contacts (the durable dial queue), each attempt, and the do-not-call list.

Imported at the end of ``parley.store.models`` so ``Base.metadata`` (and the migration check) sees them.
The attempt row is committed before its dial: unique (contact_id, number) makes dialing at most once per attempt.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from parley.store.orm_base import Base, utcnow

CAMPAIGN_STATUSES = ("draft", "running", "paused", "completed", "cancelled")
CONTACT_STATES = ("pending", "dialing", "done", "failed", "dnc", "cancelled")
FINAL_CONTACT_STATES = ("done", "failed", "dnc", "cancelled")


class Campaign(Base):
    """``schedule``/``retry``/``voicemail`` hold the dumps of parley.campaigns.schedule's models."""

    __tablename__ = "campaigns"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    #: no foreign key, like calls: a deleted agent pauses the campaign with a reason instead of deleting it
    agent_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    provider: Mapped[str] = mapped_column(String(32))  # twilio, vonage, plivo, exotel, sip
    caller_id: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    status_reason: Mapped[str | None] = mapped_column(String(300), default=None)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON)
    retry: Mapped[dict[str, Any]] = mapped_column(JSON)
    voicemail: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class CampaignContact(Base):
    """One number to call. ``state`` pending means waiting for its next attempt (``next_attempt_at``; None: as
    soon as the schedule allows). ``variables`` are the upload's other columns, as strings."""

    __tablename__ = "campaign_contacts"
    __table_args__ = (
        UniqueConstraint("campaign_id", "phone", name="uq_campaign_contacts_campaign_phone"),
        Index("ix_campaign_contacts_due", "campaign_id", "state", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    #: the 1-based line of the upload (or position in a JSON list), so reports point at the source
    row: Mapped[int] = mapped_column(Integer)
    phone: Mapped[str] = mapped_column(String(32))  # E.164
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timezone: Mapped[str] = mapped_column(String(64))  # IANA, always set at import
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    greeting: Mapped[str | None] = mapped_column(String(1000), default=None)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    outcome: Mapped[str | None] = mapped_column(String(32), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignAttempt(Base):
    """One dial of a contact; ``call_id`` is chosen before the dial and becomes the call record's id."""

    __tablename__ = "campaign_attempts"
    __table_args__ = (
        UniqueConstraint("contact_id", "number", name="uq_campaign_attempts_contact_number"),
        Index("ix_campaign_attempts_campaign_outcome", "campaign_id", "outcome"),
        Index("ix_campaign_attempts_campaign_started", "campaign_id", "started_at"),  # the per-minute rate
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaign_contacts.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    call_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    outcome: Mapped[str | None] = mapped_column(String(32), default=None)


class DoNotCall(Base):
    """A tenant's number that no campaign may dial: checked at import and again before every dial."""

    __tablename__ = "do_not_call"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), primary_key=True)  # E.164
    reason: Mapped[str | None] = mapped_column(String(300), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

"""Request and response models of the campaign and do-not-call routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.campaigns.schedule import CampaignSchedule, RetryPolicy, VoicemailPolicy

Provider = Literal["twilio", "vonage", "plivo", "exotel", "sip"]
ContactState = Literal["pending", "dialing", "done", "failed", "dnc", "cancelled"]
_PHONE = r"^\+?[0-9 ().\-]{3,40}$"


class ContactIn(BaseModel):
    """A contact: ``phone`` and any other keys, which become its call variables (strings)."""

    model_config = ConfigDict(extra="allow")

    phone: str = Field(max_length=64)
    timezone: str | None = Field(None, max_length=64)
    language: str | None = Field(None, max_length=16)
    greeting: str | None = Field(None, max_length=1000)


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    agent_id: uuid.UUID
    provider: Provider
    caller_id: str | None = Field(None, max_length=64, pattern=_PHONE)
    schedule: CampaignSchedule = Field(default_factory=CampaignSchedule)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    voicemail: VoicemailPolicy | None = None
    contacts: list[ContactIn] = Field(default_factory=list, max_length=10_000)


class CampaignPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    schedule: CampaignSchedule | None = None
    retry: RetryPolicy | None = None
    voicemail: VoicemailPolicy | None = None


class ImportReportOut(BaseModel):
    accepted: int
    dnc: int
    duplicates: int
    rejected_count: int
    rejected: list[dict[str, Any]]
    duplicate_rows: list[dict[str, Any]]
    error: str | None = None


class CampaignCounts(BaseModel):
    total: int
    by_state: dict[str, int]
    by_outcome: dict[str, int]
    in_flight: int


class CampaignOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    agent_id: uuid.UUID
    provider: str
    caller_id: str | None
    status: str
    status_reason: str | None
    schedule: dict[str, Any]
    retry: dict[str, Any]
    voicemail: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    counts: CampaignCounts | None = None
    import_: ImportReportOut | None = Field(None, alias="import", serialization_alias="import")


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    outcome: str | None
    call_id: uuid.UUID
    started_at: datetime
    ended_at: datetime | None


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    row: int
    phone: str
    variables: dict[str, Any]
    timezone: str
    language: str | None
    greeting: str | None
    state: str
    outcome: str | None
    attempts: int
    next_attempt_at: datetime | None
    history: list[AttemptOut] = []


class TestCallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(max_length=64)
    variables: dict[str, str] | None = Field(None, max_length=100)


class DncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str = Field(max_length=64)
    reason: str | None = Field(None, max_length=300)


class DncOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    phone: str
    reason: str | None
    created_at: datetime

"""Response bodies of the API the web console reads: who am I, analytics, version diffs, validation.

Kept apart from :mod:`parley.api.schemas` (the resources' bodies) so the console's additions stay in one place.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class MeOut(BaseModel):
    """The credential a request was made with: enough for a client to know what it may show and do."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID | None = Field(description="the API key's id; null for a JWT")
    key_name: str | None = Field(description="the API key's name; null for a JWT")
    subject: str = Field(description="the key id, or the JWT's sub")
    kind: str = Field(description="api_key or jwt")
    role: str
    scopes: list[str] = Field(description="the Parley scopes the credential holds (all of them when it names none)")


class DayFigures(BaseModel):
    """One day of calls (by their start, in the asked time zone); v2v figures in seconds, null without turns."""

    date: date
    calls: int
    minutes: float
    turns: int
    v2v_avg: float | None
    v2v_p50: float | None
    v2v_p95: float | None
    interruption_rate: float | None = Field(description="interrupted turns / turns; null without turns")


class TotalFigures(BaseModel):
    calls: int
    minutes: float
    turns: int
    v2v_avg: float | None
    v2v_p50: float | None
    v2v_p95: float | None
    interruption_rate: float | None
    v2v_samples: int = Field(description="voice-to-voice values the percentiles were computed over")


class AnalyticsOut(BaseModel):
    since: datetime
    until: datetime
    tz: str
    days: list[DayFigures]
    totals: TotalFigures
    end_reasons: dict[str, int] = Field(description="calls per end reason (active calls: 'active')")
    transports: dict[str, int] = Field(description="calls per transport (talk, twilio, sip…)")


class VersionDiff(BaseModel):
    """A unified diff of two versions' documents as YAML (keys in the documents' order)."""

    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from", serialization_alias="from")
    to: int
    diff: str = Field(description="unified diff; empty when the documents are the same")


class Validity(BaseModel):
    valid: bool = True

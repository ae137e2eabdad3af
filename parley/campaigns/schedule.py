"""A campaign's schedule and retry policy: pydantic models shared by the API, the store and the scheduler.

Stored as JSON on the campaign (``model_dump(mode="json")``); validated here once, so the scheduler can trust them.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime, time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri")


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA zone (``Europe/Paris``, ``UTC``); lookup only, never a path on disk."""
    return name in _zones()


def check_timezone(name: str) -> str:
    if not is_timezone(name):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris')")
    return name


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("give a time zone (e.g. a trailing 'Z' for UTC)")
    return value.astimezone(UTC)


class CallingWindow(BaseModel):
    """When contacts may be called, in each contact's local time. No window crosses midnight: split it in two."""

    model_config = ConfigDict(extra="forbid")

    days: list[Day] = Field(default_factory=lambda: list(WEEKDAYS), max_length=7)
    start: time = time(9, 0)
    end: time = time(17, 0)

    @model_validator(mode="after")
    def _ordered(self) -> CallingWindow:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("window times are the contact's local time: give them without a time zone")
        if self.end <= self.start:
            raise ValueError("a window's end must be after its start (split windows that cross midnight)")
        return self


class CampaignSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: UTC-aware; None: when the campaign is started
    start_at: datetime | None = None
    #: after it, the remaining contacts end as failed ("campaign-ended") and the campaign completes
    end_at: datetime | None = None
    #: an empty list: any time
    windows: list[CallingWindow] = Field(default_factory=lambda: [CallingWindow()], max_length=50)
    #: IANA; used when neither a ``timezone`` column nor the number gives one
    default_timezone: str = "UTC"
    max_calls_per_minute: int = Field(10, ge=1, le=6000)
    max_concurrent: int = Field(5, ge=1, le=1000)
    hung_up_early_secs: float = Field(5.0, ge=0, le=600)

    @field_validator("start_at", "end_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _ordered(self) -> CampaignSchedule:
        if self.start_at is not None and self.end_at is not None and self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        return self


class RetryRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: extra attempts after this outcome
    count: int = Field(0, ge=0, le=10)
    spacing_s: float = Field(3600, ge=0, le=7 * 86400)


class RetryPolicy(BaseModel):
    """Per outcome, how many more attempts and how far apart. Answered contacts are never retried."""

    model_config = ConfigDict(extra="forbid")

    no_answer: RetryRule = RetryRule(count=2, spacing_s=3600)
    busy: RetryRule = RetryRule(count=2, spacing_s=600)
    failed: RetryRule = RetryRule(count=1, spacing_s=600)
    voicemail: RetryRule = RetryRule(count=0)
    hung_up_early: RetryRule = RetryRule(count=0)
    dial_lost: RetryRule = RetryRule(count=1, spacing_s=60)


class VoicemailPolicy(BaseModel):
    """Answering-machine detection, and the message left when a machine answers (None: hang up)."""

    model_config = ConfigDict(extra="forbid")

    detect: bool = False
    message: str | None = Field(None, max_length=2000)

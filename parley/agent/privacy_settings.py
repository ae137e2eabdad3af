"""The agent document's ``privacy:``: what personal data is masked before a call's record is stored, and whether
the recording is kept at all."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PiiKind = Literal["phone", "card", "email"]


class PrivacySettings(BaseModel):
    """``redact``: kinds masked in stored transcripts, events and analysis (the live caller's app still gets what
    was said); ``recording: drop`` never writes the call's audio anywhere."""

    model_config = ConfigDict(extra="forbid")

    redact: list[PiiKind] = Field(default_factory=list, description="phone, card, email")
    recording: Literal["keep", "drop"] = "keep"

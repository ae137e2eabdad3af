"""The document's side of a chain: ``fallback:`` links after the primary, and the deadlines each is held to."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Deadlines(BaseModel):
    """How long a provider may take before the next one is asked. Keep-alives are not progress: only useful
    output (a token, audio bytes, a transcript) resets the stall clock.

    ``connect_s`` bounds opening the provider for the call (its ``prepare``); ``first_s`` the time to the first
    useful output of each request, connection included; ``stall_s`` the gap between two pieces of output.
    """

    model_config = ConfigDict(extra="forbid")

    connect_s: float = Field(3.0, gt=0, le=60)
    first_s: float = Field(2.5, gt=0, le=120)
    stall_s: float = Field(2.0, gt=0, le=120)


#: defaults that fit a phone call: a caller notices ~1 s of dead air, so a primary gets little more than its
#: usual time; a fallback link is probably cold (its connection not yet warm) and gets more for its first output
STAGE_DEADLINES = {
    "llm": Deadlines(first_s=2.5, stall_s=2.0),
    "tts": Deadlines(first_s=1.5, stall_s=1.5),
    "stt": Deadlines(first_s=3.0, stall_s=3.0),
}
COLD_FIRST_FACTOR = 2.0


class FallbackLink(BaseModel):
    """One provider after the primary: its name, options and (optionally) its own deadlines."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=64)
    options: dict[str, Any] = Field(default_factory=dict)
    deadlines: Deadlines | None = None


def link_deadlines(stage: str, given: Deadlines | None, primary: bool) -> Deadlines:
    """A link's deadlines: its own, else the stage's defaults (looser first output for a cold fallback)."""
    if given is not None:
        return given
    base = STAGE_DEADLINES[stage]
    if primary:
        return base
    return base.model_copy(update={"first_s": base.first_s * COLD_FIRST_FACTOR})

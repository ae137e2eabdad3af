"""The agent document's ``memory:`` block: whether the agent remembers callers between calls, and how much.

Kept apart from :mod:`parley.agent.document` so the document gains one field; the runner is
:mod:`parley.calls.memory` (loaded once at a call's set-up, updated in the background after it ends).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_MEMORY_CHARS = 4_000


class MemorySettings(BaseModel):
    """``enabled``: remember callers, keyed by their phone number, per tenant (off unless asked for);
    ``max_chars``: the most the remembered summary and facts take together (also what the prompt grows by)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    max_chars: int = Field(800, ge=100, le=MAX_MEMORY_CHARS)
    timeout_secs: float = Field(60.0, gt=0, le=600, description="the whole update after a call, retry included")

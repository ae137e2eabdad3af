"""The ``tools:`` section of an agent document: one entry per tool (or per MCP server), by ``type``.

Each kind's config model lives beside its tool (``parley/tools/http.py``: ``HttpToolConfig`` ...), derives from
:class:`ToolConfigBase` and turns itself into tools with :meth:`ToolConfigBase.create`. Adding a kind: write its
module, then add its config to :data:`ToolConfig` below.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from parley.services.secrets import SecretSource
from parley.tools.base import DEFAULT_DEADLINE_S, AgentTool, SideEffect

TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: names the built-in actions use: a document's tool may not take them
RESERVED_NAMES = frozenset(("hang_up", "transfer", "send_dtmf"))


class ToolConfigBase(BaseModel):
    """What every tool entry has. ``parameters`` is the JSON schema of the arguments the LLM must give."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = Field(min_length=1, max_length=1024)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    side_effect: SideEffect = SideEffect.READ
    deadline_s: float = Field(default=DEFAULT_DEADLINE_S, gt=0, le=120)
    filler: str = Field(default="", max_length=300)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TOOL_NAME.match(v):
            raise ValueError("a tool name is a letter then up to 63 letters, digits, '_' or '-'")
        if v in RESERVED_NAMES:
            raise ValueError(f"{v!r} is a built-in action: enable it under actions instead")
        return v

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(v)
        except SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON schema: {exc.message}") from None
        if v.get("type") != "object":
            raise ValueError('parameters must be a JSON schema of "type": "object"')
        return v

    async def create(self, secrets: SecretSource) -> list[AgentTool]:
        """The tools this entry declares (one, or an MCP server's allowed tools), ready to :meth:`AgentTool.open`."""
        raise NotImplementedError


class ToolUseSettings(BaseModel):
    """How the agent uses its tools on a call (the document's ``tool_use``).

    A filler line is said only when a tool has not answered within ``filler_delay_ms`` (most answer sooner, and a
    filler before a fast answer is noise), and a "still working" line once after ``still_working_ms``. A step that
    fails (an error, a timeout, an unknown tool) is answered by ``recovery_line`` at once rather than trusting a small
    model to explain it; ``max_tool_steps`` bounds a model that keeps calling tools.
    """

    model_config = ConfigDict(extra="forbid")

    max_tool_steps: int = Field(default=3, ge=1, le=10)
    filler_delay_ms: int = Field(default=700, ge=0, le=10_000)
    filler_line: str = Field(default="One moment, let me check.", max_length=300)
    still_working_ms: int = Field(default=4_000, ge=500, le=60_000)
    still_working_line: str = Field(default="I'm still working on it.", max_length=300)
    recovery_line: str = Field(default="Sorry, I couldn't check that just now.", max_length=300)

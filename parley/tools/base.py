"""One interface for every kind of tool the agent may call: an HTTP endpoint, a Python function, an MCP server's tool.

A tool kind is one module implementing :class:`AgentTool` and a pydantic config model with a ``type`` literal
(``http``, ``python``, ``mcp``); :mod:`parley.tools.toolbox` builds them from the agent document and
:mod:`parley.tools.runner` calls them: argument validation against the schema, the deadline, events, redaction.
A tool raises :class:`ToolError` for a failure the caller should hear a recovery line for; any other exception
is treated the same way but logged as a bug.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from parley.services.llm.base import Tool

DEFAULT_DEADLINE_S = 8.0


class SideEffect(StrEnum):
    """What calling a tool does to the world, which decides what a barge-in may do to it.

    ``read`` keeps running through a barge-in (its result is used on the next turn); ``idempotent`` may be
    retried; ``irreversible`` is carried out only for a reply that was not interrupted or discarded.
    """

    READ = "read"
    IDEMPOTENT = "idempotent"
    IRREVERSIBLE = "irreversible"


class ToolError(RuntimeError):
    """A tool could not do its job; ``kind`` is a short, secret-free label for the call's events.

    Kinds used across tools: ``timeout``, ``http-status``, ``not-json``, ``too-large``, ``blocked-address``,
    ``connect``, ``bad-arguments``, ``unknown-tool``, ``server-died``, ``failed``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ToolResult:
    """What a tool returns: ``content`` goes to the LLM (JSON-able), ``variables`` into the call's variables."""

    content: Any
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolContext:
    """What a running tool may see and do on its call.

    ``variables`` are the call's variables (``caller``, ``called``, ``agent``, ``call_id`` and what tools and flows
    collected); ``say`` speaks a line to the caller when the caller is not talking (progress of a long tool);
    ``act`` carries out a built-in action (``hang_up``, ``transfer``, ``send_dtmf``) with its target.
    """

    call_id: str = ""
    variables: dict[str, Any] = field(default_factory=dict)
    say: Callable[[str], Awaitable[None]] | None = None
    act: Callable[[str, str], Awaitable[None]] | None = None

    async def speak(self, text: str) -> None:
        if self.say is not None:
            await self.say(text)


class AgentTool(ABC):
    """A tool the LLM may call. Subclasses set the attributes from their config and implement :meth:`run`."""

    name: str
    description: str
    parameters: dict[str, Any]
    side_effect: SideEffect = SideEffect.READ
    deadline_s: float = DEFAULT_DEADLINE_S
    #: said if the tool has not answered within the filler delay ("" = the agent's default filler line)
    filler: str = ""

    def spec(self) -> Tool:
        """How the LLM sees this tool (OpenAI function-calling shape)."""
        return Tool(self.name, self.description, self.parameters)

    @abstractmethod
    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Do the work. ``arguments`` were already checked against :attr:`parameters`. Raise :class:`ToolError`."""

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect before the call's first turn (an MCP session); raise :class:`ToolError` if it cannot."""

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release what :meth:`open` took."""

"""Language model interface: chat messages (and the tools the agent may use) in, streamed text and tool calls out."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NotRequired, TypedDict

from parley.services.errors import ProviderError
from parley.services.registry import ProviderOptions, Registry


class LLMError(ProviderError):
    """A reply could not be produced (model missing, server unreachable, key rejected): one type for callers to catch.

    Messages name the model file or server URL, never a credential.
    """


class Message(TypedDict):
    """A chat message in the OpenAI shape: ``role`` "system" | "user" | "assistant" | "tool".

    An assistant message that called tools carries ``tool_calls`` (``[{"id", "type": "function", "function":
    {"name", "arguments": JSON text}}]``, its ``content`` may be ""); a tool's result is a "tool" message with the
    call's ``tool_call_id`` and the result as JSON text in ``content``.
    """

    role: str
    content: str
    tool_calls: NotRequired[list[dict[str, Any]]]
    tool_call_id: NotRequired[str]


@dataclass(frozen=True)
class Tool:
    """A function the LLM may call (OpenAI function-calling shape): ``parameters`` is a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    """The LLM asks to act (``hang_up``, ``transfer``) or to use a tool; the responder checks it against the document.

    ``id`` pairs the call with its result in the history (the provider's id, or one made here).
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:16]}", compare=False)


class LLM(ABC):
    """Streams a reply. Closing the iterator early (barge-in) must stop generation promptly."""

    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    #: whether :meth:`stream` may yield a :class:`ToolCall` (providers without it ignore ``tools``); a provider
    #: whose models differ may set it per instance
    supports_tools: bool = False

    @abstractmethod
    def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        """Yield pieces of the assistant's reply to ``messages`` as they are generated.

        A :class:`ToolCall` comes after the text it belongs to; ``tools`` lists what the agent may do
        (empty: no tools are offered).
        """

    async def warm(self, messages: list[Message]) -> None:  # noqa: B027 (optional hook)
        """Optionally pre-compute a prompt prefix (the system prompt) before the first turn."""

    async def prepare(self) -> None:  # noqa: B027 (optional hook)
        """Load models before the call starts (off the event loop), so no caller waits for a cold start."""

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release resources held for this call."""


# "openai" lives in openai_compat.py: it serves any OpenAI-compatible server
registry: Registry[LLM] = Registry("llm", modules={"openai": "openai_compat"})

"""Language model interface: chat messages in, streamed text out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from typing import ClassVar, TypedDict

from parley.services.registry import ProviderOptions, Registry


class LLMError(RuntimeError):
    """A reply could not be produced (model missing, server unreachable, key rejected): one type for callers to catch.

    Messages name the model file or server URL, never a credential.
    """


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class LLM(ABC):
    """Streams a reply. Closing the iterator early (barge-in) must stop generation promptly."""

    Options: ClassVar[type[ProviderOptions]] = ProviderOptions

    @abstractmethod
    def stream(self, messages: list[Message]) -> AsyncGenerator[str, None]:
        """Yield pieces of the assistant's reply to ``messages`` as they are generated."""

    async def warm(self, messages: list[Message]) -> None:  # noqa: B027 (optional hook)
        """Optionally pre-compute a prompt prefix (the system prompt) before the first turn."""

    async def prepare(self) -> None:  # noqa: B027 (optional hook)
        """Load models before the call starts (off the event loop), so no caller waits for a cold start."""

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release resources held for this call."""


# "openai" lives in openai_compat.py: it serves any OpenAI-compatible server
registry: Registry[LLM] = Registry("llm", modules={"openai": "openai_compat"})

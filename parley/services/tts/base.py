"""Text-to-speech interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from typing import ClassVar

from parley.services.registry import ProviderOptions, Registry


class TTS(ABC):
    """Speaks one sentence at a time, yielding PCM16 mono chunks as soon as they exist."""

    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    #: rate of the PCM16 this provider yields
    sample_rate: int = 22050

    @abstractmethod
    def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield PCM16 mono audio at :attr:`sample_rate` for ``text``."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Load models before the call starts (off the event loop), so no caller waits for a cold start."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources held for this call."""


registry: Registry[TTS] = Registry("tts")

"""Speech-to-text interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from parley.services.registry import ProviderOptions, Registry


class STT(ABC):
    """Transcribes one caller utterance. Implementations never block the event loop."""

    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    #: rate of the PCM16 this provider wants
    sample_rate: int = 16000

    @abstractmethod
    async def transcribe(self, pcm: bytes, language: str = "en") -> str:
        """Text of ``pcm`` (PCM16 mono at :attr:`sample_rate`); empty string when nothing was said."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Load models before the call starts (off the event loop), so no caller waits for a cold start."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources held for this call."""


registry: Registry[STT] = Registry("stt")

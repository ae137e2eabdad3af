"""Speech-to-text interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import ClassVar, Literal

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


@dataclass(frozen=True)
class SttEvent:
    """What a streaming recognizer says as audio arrives.

    ``interim``: a guess at the words so far (may change); ``final``: a settled stretch of words (joined in order
    they make the utterance); ``endpoint``: the provider's own end-of-speech signal (Deepgram's ``speech_final`` /
    ``UtteranceEnd``, Google's ``END_OF_SINGLE_UTTERANCE``), a cue for the turn taker. ``t`` is the audio time in
    seconds from the start of the stream the event refers to (its end), where the provider says.
    """

    kind: Literal["interim", "final", "endpoint"]
    text: str = ""
    t: float | None = None
    confidence: float | None = None


class StreamingSTT(STT):
    """A recognizer that takes audio as it arrives (a cloud WebSocket or gRPC stream) beside the batch form.

    Implement :meth:`stream`; :meth:`transcribe` (the batch form today's pipeline calls at the end of an
    utterance) is then one stream of the whole utterance, its finals joined.
    """

    @abstractmethod
    def stream(self, audio: AsyncIterable[bytes], language: str = "en") -> AsyncIterator[SttEvent]:
        """Transcribe ``audio`` (PCM16 mono chunks at :attr:`sample_rate`) until it ends; yields events as they come.

        Raises :class:`parley.services.errors.ProviderError` on failure (connect, auth, a closed stream).
        """

    async def transcribe(self, pcm: bytes, language: str = "en") -> str:
        chunk = int(self.sample_rate * 0.1) * 2  # 100 ms pieces, as a live stream would send them

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(pcm), chunk):
                yield pcm[i : i + chunk]

        finals = [e.text.strip() async for e in self.stream(pieces(), language) if e.kind == "final"]
        return " ".join(t for t in finals if t)


registry: Registry[STT] = Registry("stt")

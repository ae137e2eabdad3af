"""Speech providers for the fallback tests: real implementations of the TTS and STT interfaces that fail on cue.

Importing this module registers ``flaky-tts`` and ``flaky-stt``. Each records what it was asked (texts, audio
lengths), so a test can check that the next link got the unspoken remainder or the same buffered audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np

from parley.services.errors import ErrorKind, ProviderError
from parley.services.registry import ProviderOptions
from parley.services.stt.base import STT
from parley.services.stt.base import registry as stt_registry
from parley.services.tts.base import TTS
from parley.services.tts.base import registry as tts_registry

ASKED_TTS: dict[str, list[str]] = {}
ASKED_STT: dict[str, list[int]] = {}


@tts_registry.register("flaky-tts")
class FlakyTTS(TTS):
    """A tone per sentence (0.1 s per 1.4 characters, the chain's speaking-rate estimate), optionally failing."""

    class Options(ProviderOptions):
        name: str = "a"
        rate: int = 16000
        fail_after_chunks: int | None = None  # raise after yielding this many 100 ms chunks
        hang: bool = False  # yield nothing, ever
        kind: str = "connection"

    def __init__(self, options: Options) -> None:
        self.o = options
        self.sample_rate = options.rate

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        ASKED_TTS.setdefault(self.o.name, []).append(text)
        if self.o.hang:
            await asyncio.sleep(3600)
        chunk = (np.sin(np.arange(self.o.rate // 10) / 8) * 8000).astype("<i2").tobytes()
        for i in range(max(1, round(len(text) / 1.4))):
            if self.o.fail_after_chunks is not None and i == self.o.fail_after_chunks:
                raise ProviderError(f"{self.o.name}: failed mid-sentence", kind=ErrorKind(self.o.kind))
            await asyncio.sleep(0)
            yield chunk


@stt_registry.register("flaky-stt")
class FlakySTT(STT):
    class Options(ProviderOptions):
        name: str = "a"
        text: str = "hello"
        rate: int = 16000
        fail: bool = False
        hang: bool = False

    def __init__(self, options: Options) -> None:
        self.o = options
        self.sample_rate = options.rate

    async def transcribe(self, pcm: bytes, language: str = "en") -> str:
        ASKED_STT.setdefault(self.o.name, []).append(len(pcm))
        if self.o.hang:
            await asyncio.sleep(3600)
        if self.o.fail:
            raise ProviderError(f"{self.o.name}: socket closed mid-utterance", kind=ErrorKind.CONNECTION)
        return self.o.text

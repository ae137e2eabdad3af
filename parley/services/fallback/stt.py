"""An STT chain: a recognizer that fails (or takes too long) on an utterance hands the same buffered audio to the
next, so the caller's words are not lost. Each link gets the audio at its own rate."""

from __future__ import annotations

import asyncio
import time

from parley.audio.resample import pcm16_resample
from parley.services.errors import ErrorKind, ProviderError
from parley.services.fallback.chain import Chain
from parley.services.fallback.config import Deadlines
from parley.services.stt.base import STT

PROBE_SECS = 0.5


async def probe_stt(stt: STT, deadlines: Deadlines) -> None:
    """A synthetic request: half a second of silence must come back (as any text, usually none) in time."""
    async with asyncio.timeout(deadlines.first_s):
        await stt.transcribe(bytes(int(stt.sample_rate * PROBE_SECS) * 2))


class FallbackSTT(STT):
    def __init__(self, chain: Chain[STT]) -> None:
        self.chain = chain
        self.sample_rate = chain.links[0].provider.sample_rate

    async def transcribe(self, pcm: bytes, language: str = "en") -> str:
        links = self.chain.candidates()
        last: ProviderError | None = None
        for i, link in enumerate(links):
            if i:
                self.chain.switched(links[i - 1], link, False)
            rate = link.provider.sample_rate
            audio = pcm if rate == self.sample_rate else pcm16_resample(pcm, self.sample_rate, rate)
            started = time.perf_counter()
            budget = link.deadlines.first_s + len(pcm) / 2 / self.sample_rate  # a long utterance takes longer
            try:
                async with asyncio.timeout(budget):
                    text = await link.provider.transcribe(audio, language)
            except Exception as exc:
                last = self.chain.failed(link, exc, False, started)
                continue
            self.chain.succeeded(link)
            return text
        raise ProviderError(f"every STT of the chain failed (last: {last})", kind=ErrorKind.SERVER)

    async def prepare(self) -> None:
        await self.chain.prepare()

    async def aclose(self) -> None:
        await self.chain.aclose()

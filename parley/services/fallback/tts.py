"""A TTS chain: a voice that fails mid-sentence is resumed by the next from the words not yet spoken.

Which words were spoken is estimated from the audio already yielded (a speaking rate in characters per second,
then back to the previous word boundary, so a word may be said twice but none is skipped). Every link's audio is
resampled to the chain's rate (the primary's), so the synthesizer downstream sees one voice format.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from parley.audio.resample import Resampler
from parley.services.errors import ErrorKind, ProviderError
from parley.services.fallback.chain import Chain, timed
from parley.services.fallback.config import Deadlines
from parley.services.tts.base import TTS

CHARS_PER_SEC = 14.0  # conversational speech: ~150 words a minute


async def probe_tts(tts: TTS, deadlines: Deadlines) -> None:
    """A synthetic request: the first audio of a one-word sentence."""
    async with aclosing(timed(tts.synthesize("OK."), deadlines)) as audio:
        async for chunk in audio:
            if chunk:
                return
    raise ProviderError("probe: no audio", kind=ErrorKind.BAD_RESPONSE)


def unspoken(text: str, secs_spoken: float) -> str:
    """The part of ``text`` not yet heard after ``secs_spoken`` of its audio (from a word boundary)."""
    cut = int(secs_spoken * CHARS_PER_SEC)
    if cut <= 0:
        return text
    if cut >= len(text):
        return ""
    start = text.rfind(" ", 0, cut)
    return text[start + 1 :] if start > 0 else text


class FallbackTTS(TTS):
    def __init__(self, chain: Chain[TTS]) -> None:
        self.chain = chain
        self.sample_rate = chain.links[0].provider.sample_rate

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        remaining, last = text, None
        links = self.chain.candidates()
        for i, link in enumerate(links):
            if i:
                self.chain.switched(links[i - 1], link, remaining != text)
            rate = link.provider.sample_rate
            resampler = Resampler(rate, self.sample_rate) if rate != self.sample_rate else None
            spoken_bytes, started = 0, time.perf_counter()
            try:
                async with aclosing(timed(link.provider.synthesize(remaining), link.deadlines)) as audio:
                    async for chunk in audio:
                        spoken_bytes += len(chunk)
                        out = resampler.process(chunk) if resampler is not None else chunk
                        if out:
                            yield out
            except Exception as exc:
                last = self.chain.failed(link, exc, spoken_bytes > 0, started)
                remaining = unspoken(remaining, spoken_bytes / 2 / rate)
                if not remaining:
                    return  # it failed on the last syllable: nothing is left to say
                continue
            self.chain.succeeded(link)
            return
        raise ProviderError(f"every TTS of the chain failed (last: {last})", kind=ErrorKind.SERVER)

    async def prepare(self) -> None:
        await self.chain.prepare()

    async def aclose(self) -> None:
        await self.chain.aclose()

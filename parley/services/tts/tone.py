"""A model-free TTS: a soft tone whose length follows the text (about 60 ms a character).

For the load benchmark and tests of the media path, where synthesis must cost
nothing; the audio is a stand-in for speech, not speech. It is made one 200 ms chunk
at a time, handing the event loop back between chunks, so a long text costs the
server neither memory nor a stall (a whole 20,000-character greeting at once was 20
minutes of audio computed in one go).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np
from pydantic import Field

from parley.services.registry import ProviderOptions
from parley.services.tts.base import TTS, registry

RAMP_S = 0.02  # fade in and out, so the tone starts and stops without a click


class ToneOptions(ProviderOptions):
    hz: float = Field(330.0, gt=50, lt=3000)
    ms_per_char: float = Field(60.0, gt=1, le=500)


@registry.register("tone")
class ToneTTS(TTS):
    Options = ToneOptions
    sample_rate = 8000
    chunk_samples = sample_rate // 5  # 200 ms chunks, as a streaming engine would yield them

    def __init__(self, options: ToneOptions | None = None) -> None:
        self.options = options or ToneOptions()

    def chunk(self, start: int, stop: int, total: int) -> bytes:
        """Samples ``start:stop`` of a ``total``-sample tone, the same as cutting the whole tone."""
        i = np.arange(start, stop)
        t = i / self.sample_rate
        envelope = np.minimum(1.0, np.minimum(t, (total - 1 - i) / self.sample_rate) / RAMP_S)
        return (0.25 * 32767 * envelope * np.sin(2 * np.pi * self.options.hz * t)).astype(np.int16).tobytes()

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        total = int(len(text.strip()) * self.options.ms_per_char / 1000 * self.sample_rate)
        for start in range(0, max(0, total), self.chunk_samples):
            yield self.chunk(start, min(total, start + self.chunk_samples), total)
            await asyncio.sleep(0)  # other calls run between chunks, however long the text

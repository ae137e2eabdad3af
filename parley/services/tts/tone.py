"""A model-free TTS: a soft tone whose length follows the text (about 60 ms a character).

For the load benchmark and tests of the media path, where synthesis must cost
nothing; the audio is a stand-in for speech, not speech.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import numpy as np
from pydantic import Field

from parley.services.registry import ProviderOptions
from parley.services.tts.base import TTS, registry


class ToneOptions(ProviderOptions):
    hz: float = Field(330.0, gt=50, lt=3000)
    ms_per_char: float = Field(60.0, gt=1, le=500)


@registry.register("tone")
class ToneTTS(TTS):
    Options = ToneOptions
    sample_rate = 8000

    def __init__(self, options: ToneOptions | None = None) -> None:
        self.options = options or ToneOptions()

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        n = int(len(text.strip()) * self.options.ms_per_char / 1000 * self.sample_rate)
        if n <= 0:
            return
        t = np.arange(n) / self.sample_rate
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
        pcm = (0.25 * 32767 * envelope * np.sin(2 * np.pi * self.options.hz * t)).astype(np.int16).tobytes()
        step = self.sample_rate // 5 * 2  # 200 ms chunks, as a streaming engine would yield them
        for i in range(0, len(pcm), step):
            yield pcm[i : i + step]

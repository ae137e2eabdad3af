"""Energy VAD: speech when a window's level is well above the noise floor it tracks.

Costs microseconds per window (Silero costs ~0.13 ms), which matters at hundreds of
calls per core: the load benchmark's agent uses it. It cannot tell a voice from a
door slam; use Silero where callers are in noisy places.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from pydantic import Field

from parley.services.registry import ProviderOptions
from parley.services.vad.base import VAD, registry


class EnergyOptions(ProviderOptions):
    speech_dbfs: float = Field(-45.0, ge=-90, le=0, description="windows louder than this may be speech")
    margin_db: float = Field(12.0, ge=0, le=60, description="and this far above the tracked noise floor")


@registry.register("energy")
class EnergyVAD(VAD):
    Options = EnergyOptions
    sample_rates: ClassVar[tuple[int, ...]] = (8000, 16000)

    def __init__(self, options: EnergyOptions | None = None) -> None:
        self.options = options or EnergyOptions()
        self._floor = -70.0

    def window_samples(self, sample_rate: int) -> int:
        return 256 if sample_rate == 8000 else 512

    def speech_probability(self, window: np.ndarray, sample_rate: int) -> float:
        power = float(np.dot(window, window)) / max(1, window.shape[-1])
        level = 10 * math.log10(power + 1e-12)
        # the floor falls fast and rises slowly, so speech does not drag it up
        self._floor = level if level < self._floor else self._floor + 0.05 * (level - self._floor) * 0.1
        above = level - max(self._floor, -90.0)
        if level < self.options.speech_dbfs:
            return 0.0
        return min(1.0, max(0.0, above / (2 * self.options.margin_db)))

    def reset(self) -> None:
        self._floor = -70.0

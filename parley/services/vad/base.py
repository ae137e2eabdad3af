"""Voice activity detection interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from parley.services.registry import ProviderOptions, Registry


class VAD(ABC):
    """Speech probability per fixed window; one instance per audio stream (it keeps state)."""

    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    sample_rates: ClassVar[tuple[int, ...]] = (8000, 16000)

    @abstractmethod
    def window_samples(self, sample_rate: int) -> int:
        """Samples per window at ``sample_rate``."""

    @abstractmethod
    def speech_probability(self, window: np.ndarray, sample_rate: int) -> float:
        """Probability that ``window`` (float32 in [-1, 1], :meth:`window_samples` long) is speech."""

    async def probability(self, window: np.ndarray, sample_rate: int) -> float:
        """:meth:`speech_probability` for a caller that can wait: a VAD may batch it with other streams' windows."""
        return self.speech_probability(window, sample_rate)

    @abstractmethod
    def reset(self) -> None:
        """Forget the stream's state."""


registry: Registry[VAD] = Registry("vad")

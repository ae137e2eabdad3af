"""A level gate in front of a model VAD: the model hears only windows that could be speech.

Most of a phone call's caller audio is the caller listening: line noise, not speech.
Running Silero on it costs ~0.1–0.2 ms a window, 31 windows a second per call; the
gate costs a dot product. A window is skipped (scored 0) when it is no louder than
the stream's noise floor plus ``margin_db``, and the model has not heard speech in
the last ``hangover`` windows, so the end of speech (and every quiet syllable inside
it) is still the model's decision.

The floor is the quietest window of the last ~1.5 s (minimum statistics): stationary
noise sets it within that time, a door slam or the caller's own voice does not raise
it for long. While the gate is shut the model's recurrent state is kept as the last
run left it. Silero's state has a long memory: replaying only the 3 windows before an
onset left it "eager" (speech ends up to 8 windows late, measured on espeak speech),
so when the gate opens the model first hears the ``replay`` windows (0.5 s) before
the onset, which gives the same speech starts and ends as running throughout within
a window. A new stream's first ``2 * replay`` windows are all heard (its state settles).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

SPEECH_HINT = 0.1  # a model score at or above this keeps the gate open (the hangover restarts)


class LevelGate:
    """Per-stream decision: run the model on this window, or score it 0."""

    def __init__(
        self, margin_db: float = 6.0, min_dbfs: float = -70.0, hangover: int = 16, replay: int = 32, memory: int = 48
    ) -> None:
        self.margin_db, self.min_dbfs, self.hangover, self.warm_up = margin_db, min_dbfs, hangover, 2 * replay
        self._levels: deque[float] = deque(maxlen=memory)  # recent window levels (dBFS), for the floor
        self._skipped: deque[np.ndarray] = deque(maxlen=replay + 1)  # +1: the context for the first replayed
        self._hang = 0
        self._heard = 0  # windows the model heard: a new stream's first ones all are (its state settles)

    def reset(self) -> None:
        self._levels.clear()
        self._skipped.clear()
        self._hang = 0
        self._heard = 0

    def admit(self, window: np.ndarray) -> bool:
        """True: the model must hear ``window`` (after :meth:`lead_in`); False: it is not speech."""
        power = float(np.dot(window, window)) / max(1, window.shape[-1])
        level = 10.0 * math.log10(power + 1e-12)
        floor = min(self._levels) if self._levels else -120.0
        self._levels.append(level)
        if self._hang > 0 or (
            level >= self.min_dbfs and (level >= floor + self.margin_db or self._heard < self.warm_up)
        ):
            return True
        self._skipped.append(window)
        return False

    def lead_in(self) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """(the window before them if the model missed it, else None; the skipped windows to hear, oldest first)."""
        windows = list(self._skipped)
        self._skipped.clear()
        if len(windows) == self._skipped.maxlen:  # older ones were dropped: the first is only the context
            return windows[0], windows[1:]
        return None, windows  # every window since the model's last run: its context is still right

    def heard(self, probability: float) -> None:
        """The model's score of an admitted window."""
        self._heard += 1
        self._hang = self.hangover if probability >= SPEECH_HINT else max(0, self._hang - 1)

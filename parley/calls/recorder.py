"""Stereo call recording (caller left, agent right), streamed to disk as the call goes.

Both sides arrive as 20 ms frames numbered from the call's start; a stereo frame is
written as soon as both sides have it, so memory holds at most the lag between
the two sides, never the call.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from parley.audio import WavWriter, samples_per_frame


class StereoRecorder:
    """Aligns caller and agent frames by call time and writes them as one stereo WAV."""

    def __init__(self, path: str | Path, sample_rate: int, frame_ms: int = 20) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._frame_samples = samples_per_frame(sample_rate, frame_ms)
        self._frame_s = frame_ms / 1000
        self._writer = WavWriter(self.path, sample_rate, channels=2)
        self._caller: deque[bytes] = deque()
        self._agent: deque[bytes] = deque()
        self._written = 0  # frames

    async def caller(self, pcm: bytes, t: float, speech: bool = True) -> None:
        self._side(self._caller, pcm, t)

    async def agent(self, pcm: bytes, t: float, speech: bool = True) -> None:
        self._side(self._agent, pcm, t)

    def _side(self, queue: deque[bytes], pcm: bytes, t: float) -> None:
        if self._writer.closed:
            return
        index = round(t / self._frame_s)
        have = self._written + len(queue)
        silence = bytes(self._frame_samples * 2)
        for _ in range(index - have):  # a side that skipped frames gets silence there
            queue.append(silence)
        if index < have:
            return  # a late duplicate
        queue.append(pcm.ljust(self._frame_samples * 2, b"\0")[: self._frame_samples * 2])
        self._flush()

    def _flush(self) -> None:
        n = min(len(self._caller), len(self._agent))
        if n == 0:
            return
        left = np.frombuffer(b"".join(self._caller.popleft() for _ in range(n)), dtype="<i2")
        right = np.frombuffer(b"".join(self._agent.popleft() for _ in range(n)), dtype="<i2")
        self._writer.write(np.column_stack([left, right]))
        self._written += n

    def close(self) -> float:
        """Write what is left (the shorter side padded with silence); returns the duration in seconds."""
        if not self._writer.closed:
            silence = bytes(self._frame_samples * 2)
            while len(self._caller) < len(self._agent):
                self._caller.append(silence)
            while len(self._agent) < len(self._caller):
                self._agent.append(silence)
            self._flush()
            self._writer.close()
        return self._written * self._frame_s

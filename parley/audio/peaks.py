"""Waveform peaks: the loudest sample of each of N equal stretches of a recording, per channel, fed in chunks.

A waveform view needs a few thousand numbers per channel, not the recording: the samples stream through
:class:`Peaks` chunk by chunk (as the blob store reads them), so memory stays at one chunk whatever the call's
length, and numpy does the per-bucket maxima.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class Peaks:
    """Max |sample| (0..1) in each of ``points`` buckets of a PCM16 recording of ``frames`` frames × ``channels``.

    Frame ``i`` belongs to bucket ``i * points // frames``; with fewer frames than points, some buckets stay 0.
    """

    def __init__(self, frames: int, channels: int, points: int) -> None:
        if frames < 0 or channels < 1 or points < 1:
            raise ValueError("frames >= 0, channels >= 1 and points >= 1")
        self.frames, self.channels, self.points = frames, channels, points
        self._peaks = np.zeros((points, channels), dtype=np.int32)
        self._seen = 0  # frames fed so far
        self._rest = b""  # bytes of a frame split across chunks

    def feed(self, data: bytes) -> None:
        """The next bytes of the recording's data (little-endian int16, interleaved); any split is fine."""
        block = 2 * self.channels
        data = self._rest + data
        whole = len(data) // block * block
        self._rest = data[whole:]
        n = min(whole // block, self.frames - self._seen)  # bytes past the declared length are ignored
        if n <= 0:
            return
        samples = np.frombuffer(data, dtype="<i2", count=n * self.channels).reshape(n, self.channels)
        self._add(np.abs(samples.astype(np.int32)))
        self._seen += n

    def _add(self, magnitudes: npt.NDArray[np.int32]) -> None:
        """Fold one chunk's |samples| into the buckets: one reduceat over the runs of equal bucket ids."""
        n = len(magnitudes)
        ids = (np.arange(self._seen, self._seen + n, dtype=np.int64) * self.points) // max(self.frames, 1)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(ids)) + 1))
        maxima = np.maximum.reduceat(magnitudes, starts, axis=0)
        buckets = ids[starts]
        self._peaks[buckets] = np.maximum(self._peaks[buckets], maxima)

    def result(self, decimals: int = 4) -> list[list[float]]:
        """Per channel, ``points`` values in 0..1 (1 is full scale), rounded to keep the JSON small."""
        scaled = np.minimum(self._peaks / 32767.0, 1.0).round(decimals)
        return [scaled[:, c].tolist() for c in range(self.channels)]

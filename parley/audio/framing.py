"""PCM16 framing: cut byte streams into fixed-duration frames, and convert between PCM16 and float.

Networks deliver audio in arbitrary chunks (even splitting a sample across two packets), while VAD,
STT and the pipeline clock want fixed 20 ms frames. All PCM here is mono little-endian int16.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "SAMPLE_WIDTH",
    "FrameSplitter",
    "duration",
    "float_to_pcm16",
    "pcm16_to_float",
    "samples_per_frame",
    "split_frames",
]

SAMPLE_WIDTH = 2
"""Bytes per PCM16 sample."""

_PCM_DTYPE = np.dtype("<i2")


def samples_per_frame(sample_rate: int, frame_ms: int = 20) -> int:
    """Samples in one frame; raises ValueError rather than rounding, since a rounded frame would drift the clock."""
    if sample_rate <= 0 or frame_ms <= 0:
        raise ValueError(f"sample rate and frame length must be positive, got {sample_rate} Hz and {frame_ms} ms")
    n, rem = divmod(sample_rate * frame_ms, 1000)
    if rem:
        raise ValueError(f"{frame_ms} ms at {sample_rate} Hz is not a whole number of samples")
    return n


class FrameSplitter:
    """Turns a stream of arbitrary PCM16 chunks into whole frames, carrying the remainder between calls."""

    def __init__(self, sample_rate: int, frame_ms: int = 20) -> None:
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = samples_per_frame(sample_rate, frame_ms) * SAMPLE_WIDTH
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the rest of their frame (always less than one frame)."""
        return len(self._buf)

    def feed(self, pcm: bytes) -> list[bytes]:
        """Add a chunk of any length (odd byte counts too); return the frames it completes, oldest first."""
        self._buf += pcm
        n_frames = len(self._buf) // self.frame_bytes
        if not n_frames:
            return []
        fb = self.frame_bytes
        view = memoryview(self._buf)
        frames = [bytes(view[i * fb : (i + 1) * fb]) for i in range(n_frames)]
        view.release()
        del self._buf[: n_frames * fb]
        return frames

    def flush(self, pad: bool = True) -> bytes | None:
        """Return what is left as a last frame (zero-padded to full length if ``pad``), or None if nothing is.

        A trailing half sample cannot be decoded, so it is dropped.
        """
        whole = len(self._buf) - len(self._buf) % SAMPLE_WIDTH
        rest = bytes(self._buf[:whole])
        self._buf.clear()
        if not rest:
            return None
        return rest.ljust(self.frame_bytes, b"\x00") if pad else rest


def split_frames(pcm: bytes, sample_rate: int, frame_ms: int = 20, pad: bool = True) -> list[bytes]:
    """Split a whole PCM16 buffer into frames; the last one is zero-padded when ``pad``, kept short otherwise."""
    splitter = FrameSplitter(sample_rate, frame_ms)
    frames = splitter.feed(pcm)
    last = splitter.flush(pad=pad)
    if last is not None:
        frames.append(last)
    return frames


def pcm16_to_float(pcm: bytes | np.ndarray) -> npt.NDArray[np.float32]:
    """PCM16 (bytes or int16 array) to float32 in [-1, 1): divides by 32768 so the round trip is lossless."""
    if isinstance(pcm, bytes | bytearray | memoryview):
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm)}")
        arr = np.frombuffer(pcm, dtype=_PCM_DTYPE)
    else:
        arr = np.asarray(pcm)
        if arr.dtype != np.int16:
            raise TypeError(f"expected int16 samples, got {arr.dtype}")
    return arr.astype(np.float32) / np.float32(32768.0)


def float_to_pcm16(x: np.ndarray) -> bytes:
    """Float samples (nominally [-1, 1]) to little-endian PCM16 bytes, clipping instead of wrapping around."""
    scaled = np.rint(np.asarray(x, dtype=np.float64) * 32768.0)
    return np.clip(np.nan_to_num(scaled), -32768, 32767).astype(_PCM_DTYPE).tobytes()


def duration(pcm: bytes, sample_rate: int) -> float:
    """Seconds of audio in a mono PCM16 buffer."""
    return (len(pcm) // SAMPLE_WIDTH) / sample_rate

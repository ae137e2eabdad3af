"""Signal levels and mixing for PCM16 audio (meters, silence checks, mixing the two sides of a call)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["SILENCE_DBFS", "mix", "peak", "rms_dbfs"]

SILENCE_DBFS = -120.0
"""Level reported for digital silence: finite (safe to log, compare and serialise) and below any
non-zero int16 signal, whose quietest RMS is about -96 dBFS."""


def _as_float(pcm: bytes | np.ndarray) -> npt.NDArray[np.float64]:
    """Samples scaled so that int16 full scale is 1.0; float arrays are taken as already scaled."""
    if isinstance(pcm, bytes | bytearray | memoryview):
        if len(pcm) % 2:
            raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm)}")
        return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    arr = np.asarray(pcm)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64, copy=False)
    if arr.dtype != np.int16:
        raise TypeError(f"expected int16 or float samples, got {arr.dtype}")
    return arr.astype(np.float64) / 32768.0


def rms_dbfs(pcm: bytes | np.ndarray) -> float:
    """RMS level in dBFS (0 dBFS = a full-scale square wave); SILENCE_DBFS for silence or no samples."""
    x = _as_float(pcm)
    if x.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(x))))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * float(np.log10(rms)))


def peak(pcm: bytes | np.ndarray) -> float:
    """Largest absolute sample as a fraction of full scale (0.0 to 1.0; int16 -32768 gives 1.0)."""
    x = _as_float(pcm)
    return float(np.max(np.abs(x))) if x.size else 0.0


def mix(a: np.ndarray, b: np.ndarray) -> npt.NDArray[np.int16]:
    """Sum two int16 signals, zero-padding the shorter and clipping rather than wrapping on overflow."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.dtype != np.int16 or b_arr.dtype != np.int16:
        raise TypeError(f"mix expects int16 signals, got {a_arr.dtype} and {b_arr.dtype}")
    a32, b32 = a_arr.astype(np.int32), b_arr.astype(np.int32)
    if a32.shape[1:] != b32.shape[1:]:
        raise ValueError(f"cannot mix signals with different channel layouts: {a32.shape} and {b32.shape}")
    if len(a32) < len(b32):
        a32, b32 = b32, a32
    out = a32.copy()
    out[: len(b32)] += b32
    return np.clip(out, -32768, 32767).astype(np.int16)

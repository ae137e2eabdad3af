"""G.711 µ-law and A-law codecs, bit-exact with CPython's ``audioop`` (width 2).

Telephony carriers speak 8-bit G.711, and callers' audio passes through these functions every 20 ms,
so they are table lookups: the 256 decoded values and the 65536 encoded codes are computed once at
import with numpy, from the same integer formulas ``audioop`` uses (so results match it exactly,
including its clipping of the extreme µ-law magnitudes). ``audioop`` itself left the stdlib in 3.13.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "alaw_to_pcm16",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_pcm16",
]

_PCM_DTYPE = np.dtype("<i2")  # PCM16 on the wire is little-endian, whatever the host.


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered by its uint16 bit pattern, so ``table[pcm.view(uint16)]`` works."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    # audioop: st_14linear2ulaw(sample >> 2) with CLIP 8159, BIAS 0x84 >> 2, segment ends 0x3F..0x1FFF.
    val = _all_int16() >> 2
    mask = np.where(val < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(val), 8159) + (0x84 >> 2)
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, mag, side="left")
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF))
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    # audioop: st_linear2alaw(sample >> 3), even-bit inversion, segment ends 0x1F..0xFFF.
    val = _all_int16() >> 3
    mask = np.where(val >= 0, 0xD5, 0x55)
    mag = np.where(val >= 0, val, -val - 1)
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_end, mag, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0xF))
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENCODE = _build_ulaw_encode()
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_ENCODE = _build_alaw_encode()
_ALAW_DECODE = _build_alaw_decode()


def _as_int16(pcm: npt.ArrayLike) -> npt.NDArray[np.int16]:
    arr = np.asarray(pcm)
    if arr.dtype == np.int16:
        return arr
    if arr.dtype.kind not in "iu":
        raise TypeError(f"G.711 encodes int16 PCM, got an array of {arr.dtype}")
    if arr.size and (arr.min() < -32768 or arr.max() > 32767):
        raise ValueError("G.711 encodes int16 PCM; the array holds values outside -32768..32767")
    return arr.astype(np.int16)


def _as_codes(codes: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    arr = np.asarray(codes)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise TypeError(f"G.711 codes are bytes (uint8 0..255), got an array of {arr.dtype}")
    return arr.astype(np.uint8)


def _pcm_from_bytes(b: bytes) -> npt.NDArray[np.int16]:
    if len(b) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(b)}")
    return np.frombuffer(b, dtype=_PCM_DTYPE).astype(np.int16, copy=False)


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """Encode int16 samples to µ-law codes (uint8, same shape)."""
    return _ULAW_ENCODE[_as_int16(pcm).view(np.uint16)]


def ulaw_decode(codes: np.ndarray) -> np.ndarray:
    """Decode µ-law codes (uint8) to int16 samples (same shape)."""
    return _ULAW_DECODE[_as_codes(codes)]


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    """Encode int16 samples to A-law codes (uint8, same shape)."""
    return _ALAW_ENCODE[_as_int16(pcm).view(np.uint16)]


def alaw_decode(codes: np.ndarray) -> np.ndarray:
    """Decode A-law codes (uint8) to int16 samples (same shape)."""
    return _ALAW_DECODE[_as_codes(codes)]


def pcm16_to_ulaw(b: bytes) -> bytes:
    """Little-endian PCM16 bytes to µ-law bytes (one byte per sample)."""
    return ulaw_encode(_pcm_from_bytes(b)).tobytes()


def ulaw_to_pcm16(b: bytes) -> bytes:
    """µ-law bytes to little-endian PCM16 bytes."""
    return _ULAW_DECODE[np.frombuffer(b, dtype=np.uint8)].astype(_PCM_DTYPE).tobytes()


def pcm16_to_alaw(b: bytes) -> bytes:
    """Little-endian PCM16 bytes to A-law bytes (one byte per sample)."""
    return alaw_encode(_pcm_from_bytes(b)).tobytes()


def alaw_to_pcm16(b: bytes) -> bytes:
    """A-law bytes to little-endian PCM16 bytes."""
    return _ALAW_DECODE[np.frombuffer(b, dtype=np.uint8)].astype(_PCM_DTYPE).tobytes()

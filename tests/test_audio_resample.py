"""Resampling keeps pitch, loudness and timing, one-shot and streamed, between every supported rate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from parley.audio import Resampler, pcm16_resample, resample

RATES = [8000, 16000, 22050, 24000, 48000]
PAIRS = [(s, d) for s, d in itertools.product(RATES, RATES) if s != d]
TONE_HZ = 1000.0  # well inside the passband of the lowest rate (8 kHz)
AMPLITUDE = 0.5


def sine(rate: int, seconds: float = 0.5, dtype: type = np.int16) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)
    return np.rint(x * 32767).astype(np.int16) if dtype is np.int16 else x.astype(dtype)


def tone_of(y: np.ndarray, rate: int) -> tuple[float, float]:
    """(frequency of the FFT peak in Hz, RMS amplitude as a fraction of full scale) of the middle part."""
    x = y.astype(np.float64)
    if y.dtype == np.int16:
        x /= 32767
    x = x[len(x) // 5 : -len(x) // 5]  # skip the filter's start and end transients
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))  # zero-padded for a fine grid
    freq = float(np.argmax(spectrum)) * rate / (8 * len(x))
    return freq, float(np.sqrt(np.mean(x**2)) * np.sqrt(2))


@pytest.mark.parametrize(("src", "dst"), PAIRS)
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_resample_keeps_frequency_amplitude_and_length(src: int, dst: int, dtype: type) -> None:
    x = sine(src, dtype=dtype)
    y = resample(x, src, dst)
    assert y.dtype == dtype
    assert y.ndim == 1
    assert abs(len(y) - len(x) * dst / src) <= 1
    freq, amp = tone_of(y, dst)
    assert freq == pytest.approx(TONE_HZ, abs=2.0)
    assert amp == pytest.approx(AMPLITUDE, rel=0.01)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_stream_matches_one_shot(src: int, dst: int) -> None:
    pcm = sine(src, seconds=0.7).tobytes()
    rng = np.random.default_rng(src * 7 + dst)
    resampler = Resampler(src, dst)
    out, pos = [], 0
    while pos < len(pcm):
        n = int(rng.integers(1, 1500))  # odd byte counts split samples across chunks
        out.append(resampler.process(pcm[pos : pos + n]))
        pos += n
    out.append(resampler.flush())
    streamed = np.frombuffer(b"".join(out), dtype=np.int16)
    one_shot = np.frombuffer(pcm16_resample(pcm, src, dst), dtype=np.int16)
    assert len(streamed) == len(one_shot)
    assert np.max(np.abs(streamed.astype(np.int32) - one_shot)) <= 4


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_stream_latency_is_bounded(src: int, dst: int) -> None:
    """Fed 20 ms frames, the stream never holds back more than 150 ms of audio (soxr MQ measures <= ~120 ms)."""
    resampler = Resampler(src, dst)
    frame = bytes(src // 50 * 2)
    fed = produced = 0
    for i in range(100):
        produced += len(resampler.process(frame)) // 2
        fed += len(frame) // 2
        if i >= 20:
            held_back_ms = (fed * dst / src - produced) / dst * 1000
            assert held_back_ms < 150


def test_resampler_can_start_a_new_stream_after_flush() -> None:
    pcm = sine(8000, seconds=0.3).tobytes()
    resampler = Resampler(8000, 16000)
    first = resampler.process(pcm) + resampler.flush()
    second = resampler.process(pcm) + resampler.flush()
    assert len(first) == len(second) == 2 * len(pcm)
    assert np.max(np.abs(np.frombuffer(first, np.int16).astype(int) - np.frombuffer(second, np.int16))) <= 4


def test_equal_rates_are_identity() -> None:
    x = sine(16000)
    y = resample(x, 16000, 16000)
    np.testing.assert_array_equal(x, y)
    assert y is not x
    resampler = Resampler(16000, 16000)
    assert resampler.process(x.tobytes()[:101]) + resampler.process(x.tobytes()[101:]) == x.tobytes()
    assert resampler.flush() == b""
    assert pcm16_resample(x.tobytes(), 16000, 16000) == x.tobytes()


def test_empty_input() -> None:
    assert resample(np.zeros(0, np.int16), 8000, 16000).size == 0
    assert pcm16_resample(b"", 8000, 16000) == b""
    assert Resampler(8000, 16000).process(b"") == b""


def test_pcm16_resample_matches_array_resample() -> None:
    x = sine(24000)
    assert pcm16_resample(x.tobytes(), 24000, 8000) == resample(x, 24000, 8000).tobytes()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((10, 2), np.int16), 8000, 16000)
    with pytest.raises(TypeError):
        resample(np.zeros(10, np.int32), 8000, 16000)
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 16000)
    with pytest.raises(ValueError, match="even number"):
        pcm16_resample(b"\x00", 8000, 16000)

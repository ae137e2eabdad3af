"""Framing, PCM/float conversion and levels: the per-frame plumbing every transport relies on."""

from __future__ import annotations

import numpy as np
import pytest

from parley.audio import (
    SAMPLE_WIDTH,
    SILENCE_DBFS,
    FrameSplitter,
    duration,
    float_to_pcm16,
    mix,
    pcm16_to_float,
    peak,
    rms_dbfs,
    samples_per_frame,
    split_frames,
)


@pytest.mark.parametrize(
    ("rate", "ms", "expected"),
    [(8000, 20, 160), (16000, 20, 320), (22050, 20, 441), (24000, 20, 480), (48000, 10, 480)],
)
def test_samples_per_frame(rate: int, ms: int, expected: int) -> None:
    assert samples_per_frame(rate, ms) == expected


def test_samples_per_frame_refuses_fractional_frames() -> None:
    with pytest.raises(ValueError, match="whole number"):
        samples_per_frame(22050, 10)
    with pytest.raises(ValueError):
        samples_per_frame(0)


@pytest.mark.parametrize("seed", range(5))
def test_random_chunks_reassemble_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pcm = rng.integers(-32768, 32768, size=16000 * 3 + 123, dtype=np.int16).tobytes()
    splitter = FrameSplitter(16000)
    frames: list[bytes] = []
    pos = 0
    while pos < len(pcm):
        n = int(rng.integers(0, 2000))  # includes empty and odd-sized chunks
        frames += splitter.feed(pcm[pos : pos + n])
        pos += n
        assert splitter.pending < splitter.frame_bytes
    assert all(len(f) == 640 for f in frames)
    assert len(frames) == len(pcm) // 640
    tail = splitter.flush(pad=False)
    assert tail is not None
    assert b"".join(frames) + tail == pcm
    assert splitter.flush() is None


def test_flush_pads_with_zeros_and_drops_a_half_sample() -> None:
    splitter = FrameSplitter(8000)
    assert splitter.feed(b"\x01\x02\x03") == []
    assert splitter.flush() == b"\x01\x02" + bytes(318)
    assert splitter.flush() is None
    splitter.feed(b"\x05")
    assert splitter.flush() is None


def test_a_sample_split_across_chunks_lands_in_the_right_frame() -> None:
    pcm = np.arange(320, dtype=np.int16).tobytes()
    splitter = FrameSplitter(8000)
    assert splitter.feed(pcm[:319]) == []
    (first,) = splitter.feed(pcm[319:321])
    assert first == pcm[:320]
    (second,) = splitter.feed(pcm[321:])
    assert second == pcm[320:]


def test_split_frames() -> None:
    pcm = bytes(range(256)) * 5  # 1280 bytes: exactly four 20 ms frames at 8 kHz (320 bytes each)
    assert [len(f) for f in split_frames(pcm, 8000)] == [320, 320, 320, 320]
    assert [len(f) for f in split_frames(pcm[:1000], 8000)] == [320, 320, 320, 320]
    assert [len(f) for f in split_frames(pcm[:1000], 8000, pad=False)] == [320, 320, 320, 40]
    assert split_frames(pcm[:1000], 8000)[-1] == pcm[960:1000] + bytes(280)
    assert split_frames(b"", 16000) == []


def test_float_conversion_round_trips_every_sample() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    x = pcm16_to_float(pcm.tobytes())
    assert x.dtype == np.float32
    assert x.min() == -1.0
    assert x.max() < 1.0
    np.testing.assert_array_equal(pcm16_to_float(pcm), x)
    assert float_to_pcm16(x) == pcm.tobytes()


def test_float_to_pcm16_clips() -> None:
    out = np.frombuffer(float_to_pcm16(np.array([2.0, -2.0, 0.5, -0.5, np.nan])), dtype=np.int16)
    assert out.tolist() == [32767, -32768, 16384, -16384, 0]


def test_pcm16_to_float_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pcm16_to_float(b"\x00")
    with pytest.raises(TypeError):
        pcm16_to_float(np.zeros(3, dtype=np.float32))


def test_duration() -> None:
    assert duration(bytes(320 * SAMPLE_WIDTH), 16000) == pytest.approx(0.02)
    assert duration(b"", 8000) == 0.0


def test_rms_dbfs() -> None:
    t = np.arange(16000) / 16000
    sine = np.rint(0.5 * 32768 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    assert rms_dbfs(sine) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)  # about -9.03 dBFS
    assert rms_dbfs(sine.tobytes()) == pytest.approx(rms_dbfs(sine))
    assert rms_dbfs(np.full(100, -32768, dtype=np.int16)) == pytest.approx(0.0)
    assert rms_dbfs(sine.astype(np.float32) / 32768) == pytest.approx(rms_dbfs(sine), abs=1e-3)
    assert rms_dbfs(np.zeros(160, np.int16)) == SILENCE_DBFS
    assert rms_dbfs(b"") == SILENCE_DBFS
    assert SILENCE_DBFS < rms_dbfs(np.array([1], dtype=np.int16)) < -90


def test_peak() -> None:
    assert peak(np.array([0, -16384, 100], dtype=np.int16)) == 0.5
    assert peak(np.array([-32768], dtype=np.int16)) == 1.0
    assert peak(b"") == 0.0


def test_mix_pads_and_clips() -> None:
    a = np.array([30000, -30000, 100], dtype=np.int16)
    b = np.array([10000, -10000], dtype=np.int16)
    out = mix(a, b)
    assert out.dtype == np.int16
    assert out.tolist() == [32767, -32768, 100]
    assert mix(b, a).tolist() == out.tolist()
    assert mix(a, np.zeros(0, np.int16)).tolist() == a.tolist()
    with pytest.raises(TypeError):
        mix(a, b.astype(np.float32))

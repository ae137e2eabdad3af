"""WAV reading and writing: every format Parley accepts, every way a file can be wrong, and streaming writes."""

from __future__ import annotations

import struct
import tracemalloc
import warnings
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parley.audio import Audio, AudioFormatError, WavWriter, load_audio, read_wav, stereo, write_wav

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib audioop on 3.11/3.12, audioop-lts on 3.13+
    import audioop

ULAW, ALAW = audioop.ulaw2lin, audioop.alaw2lin
GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
RNG = np.random.default_rng(1234)


def chunk(cid: bytes, body: bytes, size: int | None = None) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return cid + struct.pack("<I", len(body) if size is None else size) + body + pad


def fmt_chunk(code: int, channels: int, rate: int, bits: int, extensible_code: int | None = None) -> bytes:
    block = channels * bits // 8
    body = struct.pack("<HHIIHH", code, channels, rate, rate * block, block, bits)
    if extensible_code is not None:
        body += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", extensible_code) + GUID_TAIL
    return chunk(b"fmt ", body)


def riff(*chunks: bytes, riff_size: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def wav(code: int, payload: bytes, channels: int = 1, rate: int = 8000, bits: int = 16, **kw: int) -> bytes:
    return riff(fmt_chunk(code, channels, rate, bits, kw.get("sub")), chunk(b"data", payload))


def noise(n: int, channels: int = 1) -> np.ndarray:
    shape = (n,) if channels == 1 else (n, channels)
    return RNG.integers(-32768, 32768, size=shape, dtype=np.int16)


# --- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_write_then_read_round_trips(tmp_path: Path, channels: int) -> None:
    samples = noise(4410, channels)
    path = tmp_path / "x.wav"
    write_wav(path, samples, 22050)
    audio = read_wav(path)
    assert audio.sample_rate == 22050
    assert audio.channels == channels
    assert audio.samples.dtype == np.int16
    np.testing.assert_array_equal(audio.samples, samples)
    assert audio.duration == pytest.approx(0.2)
    with wave.open(str(path)) as w:  # and the stdlib agrees about what was written
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (channels, 2, 22050, 4410)
        assert w.readframes(4410) == samples.tobytes()


def test_read_wav_from_bytes() -> None:
    samples = noise(100)
    audio = read_wav(wav(1, samples.tobytes(), rate=16000))
    np.testing.assert_array_equal(audio.samples, samples)
    assert audio.sample_rate == 16000
    with pytest.raises(AudioFormatError, match="the WAV data is not a WAV file"):
        read_wav(b"not audio at all")


@pytest.mark.parametrize(("code", "channels"), [(7, 1), (6, 1), (7, 2)])
def test_g711_wav_files(tmp_path: Path, code: int, channels: int) -> None:
    codes = bytes(range(256)) * 4
    path = tmp_path / "call.wav"
    path.write_bytes(wav(code, codes, channels=channels, bits=8))
    audio = read_wav(path)
    expected = np.frombuffer((ULAW if code == 7 else ALAW)(codes, 2), dtype=np.int16)
    np.testing.assert_array_equal(audio.samples, expected.reshape(-1, channels).squeeze())
    assert (audio.sample_rate, audio.channels) == (8000, channels)


def test_8_24_and_32_bit_pcm_keep_the_top_16_bits() -> None:
    u8 = np.array([0, 1, 128, 255], dtype=np.uint8)
    assert read_wav(wav(1, u8.tobytes(), bits=8)).samples.tolist() == [-32768, -32512, 0, 32512]
    v24 = RNG.integers(-(2**23), 2**23, size=500).astype(np.int32)
    packed = v24.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    np.testing.assert_array_equal(read_wav(wav(1, packed, bits=24)).samples, v24 >> 8)
    v32 = RNG.integers(-(2**31), 2**31, size=500).astype(np.int64)
    np.testing.assert_array_equal(read_wav(wav(1, v32.astype("<i4").tobytes(), bits=32)).samples, v32 >> 16)


@pytest.mark.parametrize(("bits", "dtype"), [(32, "<f4"), (64, "<f8")])
def test_float_wav_is_scaled_and_clipped(bits: int, dtype: str) -> None:
    x = np.array([0.0, 0.5, -0.5, -1.0, 1.0, 1.5, -3.0], dtype=dtype)
    audio = read_wav(wav(3, x.tobytes(), bits=bits))
    assert audio.samples.tolist() == [0, 16384, -16384, -32768, 32767, 32767, -32768]


@pytest.mark.parametrize(
    ("sub", "bits", "payload", "expected"),
    [
        (1, 16, np.array([1, -2, 300], "<i2").tobytes(), [1, -2, 300]),
        (1, 24, b"\x00\x01\x00\x00\x00\x80", [1, -32768]),
        (3, 32, np.array([0.25, -1.0], "<f4").tobytes(), [8192, -32768]),
        (7, 8, b"\xff\x00", [0, -32124]),
        (6, 8, b"\xd5\x55", [8, -8]),
    ],
)
def test_extensible_subformats(sub: int, bits: int, payload: bytes, expected: list[int]) -> None:
    assert read_wav(wav(0xFFFE, payload, bits=bits, sub=sub)).samples.tolist() == expected


def test_unknown_and_odd_sized_chunks_are_skipped() -> None:
    samples = noise(50)
    data = riff(
        chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00"),  # odd length, padded
        fmt_chunk(1, 1, 8000, 16),
        chunk(b"fact", struct.pack("<I", 50)),
        chunk(b"junk", b"abc"),
        chunk(b"data", samples.tobytes()),
        chunk(b"LIST", b"trailing metadata"),
    )
    np.testing.assert_array_equal(read_wav(data).samples, samples)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_streamed_files_with_unknown_data_size(size: int) -> None:
    samples = noise(300)
    data = riff(fmt_chunk(1, 1, 8000, 16), chunk(b"data", samples.tobytes(), size=size), riff_size=size)
    np.testing.assert_array_equal(read_wav(data).samples, samples)


def test_recording_cut_short_reads_what_is_there() -> None:
    samples = noise(300)
    data = wav(1, samples.tobytes())[:-101]  # data size says 600 bytes, 499 remain: 249 whole samples
    np.testing.assert_array_equal(read_wav(data).samples, samples[:249])


def test_audio_mono_averages_channels() -> None:
    audio = Audio(np.array([[100, 200], [-3, -4], [32767, 32767]], dtype=np.int16), 8000)
    assert audio.mono().dtype == np.int16
    assert audio.mono().tolist() == [150, -4, 32767]
    mono = noise(10)
    assert Audio(mono, 8000).mono() is mono


# --- errors ------------------------------------------------------------------------------------------------


def error_for(tmp_path: Path, data: bytes, name: str = "bad.wav") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(AudioFormatError) as info:
        read_wav(path)
    message = str(info.value)
    assert name in message  # the user is told which file
    return message


def test_not_a_wav_file(tmp_path: Path) -> None:
    assert "is not a WAV file" in error_for(tmp_path, b"hello, this is a text file")
    assert "MP3" in error_for(tmp_path, b"ID3\x04\x00" + bytes(100))
    assert "is not a WAV file" in error_for(tmp_path, b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(20))


@pytest.mark.parametrize(("code", "kind"), [(2, "ADPCM"), (0x55, "MP3"), (0x11, "IMA ADPCM")])
def test_compressed_formats_are_named(tmp_path: Path, code: int, kind: str) -> None:
    expected = f"uses WAV format code {code} ({kind}); Parley reads PCM, float, µ-law or A-law"
    assert expected in error_for(tmp_path, wav(code, bytes(100), bits=4))
    assert expected in error_for(tmp_path, wav(0xFFFE, bytes(100), bits=4, sub=code))  # as an extensible sub-format


def test_missing_chunks(tmp_path: Path) -> None:
    assert "no fmt chunk" in error_for(tmp_path, riff(chunk(b"data", bytes(100))))
    assert "no data chunk" in error_for(tmp_path, riff(fmt_chunk(1, 1, 8000, 16), chunk(b"LIST", b"info")))


def test_empty_wav(tmp_path: Path) -> None:
    assert "contains no audio" in error_for(tmp_path, wav(1, b""))
    assert "contains no audio" in error_for(tmp_path, wav(1, b"\x01"))  # half a sample
    assert "contains no audio" in error_for(
        tmp_path, riff(fmt_chunk(1, 1, 8000, 16), chunk(b"data", b""), b"LIST\x00\x00\x00\x00")
    )


@pytest.mark.parametrize("cut", [2, 11, 12, 16, 30])
def test_truncated_header(tmp_path: Path, cut: int) -> None:
    assert "truncated" in error_for(tmp_path, wav(1, bytes(100))[:cut])


def test_unsupported_sample_layouts(tmp_path: Path) -> None:
    assert "12-bit" in error_for(tmp_path, wav(1, bytes(100), bits=12))
    assert "0 channels" in error_for(tmp_path, wav(1, bytes(100), channels=0))


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "nope.wav")


# --- load_audio --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "decode"),
    [(".ulaw", ULAW), (".ul", ULAW), (".mulaw", ULAW), (".mu", ULAW), (".ULAW", ULAW), (".alaw", ALAW), (".al", ALAW)],
)
def test_load_headerless_g711(tmp_path: Path, ext: str, decode: Callable[[bytes, int], bytes]) -> None:
    codes = bytes(range(256))
    path = tmp_path / f"call{ext}"
    path.write_bytes(codes)
    audio = load_audio(path)
    assert audio.sample_rate == 8000
    np.testing.assert_array_equal(audio.samples, np.frombuffer(decode(codes, 2), np.int16))


def test_load_audio_reads_other_files_as_wav(tmp_path: Path) -> None:
    samples = noise(80)
    write_wav(tmp_path / "a.wav", samples, 16000)
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav").samples, samples)
    (tmp_path / "a.raw").write_bytes(samples.tobytes())
    with pytest.raises(AudioFormatError, match="not a WAV file"):
        load_audio(tmp_path / "a.raw")
    (tmp_path / "empty.ul").write_bytes(b"")
    with pytest.raises(AudioFormatError, match="contains no audio"):
        load_audio(tmp_path / "empty.ul")


# --- writing -----------------------------------------------------------------------------------------------


def test_wav_writer_streams_arrays_and_bytes(tmp_path: Path) -> None:
    samples = noise(1000, 2)
    raw = samples.tobytes()
    path = tmp_path / "rec.wav"
    with WavWriter(path, 16000, 2) as writer:
        writer.write(samples[:300])
        writer.write(samples[300:500].reshape(-1))  # flat interleaved
        writer.write(raw[2000:2003])  # splits a frame across writes
        writer.write(raw[2003:])
        assert writer.frames_written == 1000
    assert writer.closed
    np.testing.assert_array_equal(read_wav(path).samples, samples)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 16000, 1000)
        assert w.readframes(1000) == raw
    with pytest.raises(ValueError, match="closed"):
        writer.write(samples)


def test_wav_writer_rejects_wrong_samples(tmp_path: Path) -> None:
    with WavWriter(tmp_path / "x.wav", 8000, 2) as writer:
        with pytest.raises(TypeError):
            writer.write(np.zeros(4, np.float32))
        with pytest.raises(ValueError):
            writer.write(np.zeros((4, 3), np.int16))
    with pytest.raises(TypeError):
        write_wav(tmp_path / "y.wav", np.zeros(10, np.float64), 8000)


def test_ten_minutes_in_20ms_chunks_does_not_accumulate(tmp_path: Path) -> None:
    rate, frame = 16000, 320
    chunk_pcm = noise(frame)
    n_chunks = 10 * 60 * 50
    data_bytes = n_chunks * frame * 2
    path = tmp_path / "long.wav"
    tracemalloc.start()
    try:
        with WavWriter(path, rate, 1) as writer:
            for _ in range(n_chunks):
                writer.write(chunk_pcm)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < data_bytes / 50  # 19.2 MB written; the writer never holds more than a few KB
    assert writer.frames_written == n_chunks * frame
    assert path.stat().st_size == 44 + data_bytes
    with wave.open(str(path)) as w:
        assert w.getnframes() == n_chunks * frame
        w.setpos(w.getnframes() - frame)
        assert w.readframes(frame) == chunk_pcm.tobytes()


def test_stereo_pads_the_shorter_side(tmp_path: Path) -> None:
    left = np.array([1, 2, 3], dtype=np.int16)
    right = np.array([-1], dtype=np.int16)
    both = stereo(left, right)
    assert both.dtype == np.int16
    assert both.tolist() == [[1, -1], [2, 0], [3, 0]]
    write_wav(tmp_path / "s.wav", both, 8000)
    np.testing.assert_array_equal(read_wav(tmp_path / "s.wav").samples, both)

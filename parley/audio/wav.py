"""WAV files in and out: recordings, test fixtures and telephone captures.

The reader parses RIFF chunks itself because Python's ``wave`` module rejects µ-law, A-law, float and
WAVE_FORMAT_EXTENSIBLE files, which is what telephony and DAW tools produce. Everything is converted to
int16, the pipeline's one sample format, and problems are reported as AudioFormatError in words a user
can act on. The writer streams to disk so a long call recording never sits in memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from .g711 import alaw_decode, ulaw_decode

__all__ = ["Audio", "AudioFormatError", "WavWriter", "load_audio", "read_wav", "stereo", "write_wav"]

_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_BITS = {_PCM: (8, 16, 24, 32), _FLOAT: (32, 64), _ALAW: (8,), _MULAW: (8,)}
_FORMAT_NAMES = {
    2: "ADPCM",
    0x11: "IMA ADPCM",
    0x31: "GSM 6.10",
    0x40: "G.721 ADPCM",
    0x50: "MPEG",
    0x55: "MP3",
    0x160: "WMA",
    0x161: "WMA",
    0x1610: "AAC",
}
# A WAVE_FORMAT_EXTENSIBLE sub-format GUID is the classic format code followed by these 14 bytes.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
# Streaming writers that cannot seek back leave the data size as 0 or 0xFFFFFFFF: "until end of file".
_UNKNOWN_SIZE = 0xFFFFFFFF
_KNOWN_CHUNKS = (b"LIST", b"fact", b"cue ", b"id3 ", b"ID3 ", b"bext", b"JUNK", b"PAD ", b"smpl", b"inst", b"fmt ")
_NOT_WAV_HINTS = {b"ID3": "an MP3", b"\xff\xfb": "an MP3", b"\xff\xf3": "an MP3", b"OggS": "an Ogg", b"fLaC": "a FLAC"}
_HEADERLESS = {".ulaw": ulaw_decode, ".ul": ulaw_decode, ".mulaw": ulaw_decode, ".mu": ulaw_decode}
_HEADERLESS |= {".alaw": alaw_decode, ".al": alaw_decode}
_HEADERLESS_RATE = 8000  # Raw G.711 files carry no header; telephone audio is 8 kHz.


class AudioFormatError(ValueError):
    """An audio file is malformed or in a format Parley cannot read."""


@dataclass
class Audio:
    """Decoded audio: int16 samples shaped (n,) for mono or (n, channels), at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate

    def mono(self) -> npt.NDArray[np.int16]:
        """Mono int16 samples: multi-channel audio is averaged (rounded), since STT and VAD take one channel."""
        if self.samples.ndim == 1:
            return self.samples
        return np.rint(self.samples.mean(axis=1)).astype(np.int16)


@dataclass
class _Fmt:
    code: int
    channels: int
    sample_rate: int
    bits: int


def _parse_fmt(body: bytes, name: str) -> _Fmt:
    if len(body) < 16:
        raise AudioFormatError(f"{name} is truncated: its fmt chunk is {len(body)} bytes, at least 16 are needed")
    code, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if code == _EXTENSIBLE:
        if len(body) < 40:
            raise AudioFormatError(f"{name} is truncated: its extensible fmt chunk is {len(body)} bytes, not 40")
        guid = body[24:40]
        if guid[2:] != _GUID_TAIL:
            raise AudioFormatError(f"{name} uses an unknown WAVE_FORMAT_EXTENSIBLE sub-format ({guid.hex()})")
        code = int.from_bytes(guid[:2], "little")
    if code not in _BITS:
        kind = _FORMAT_NAMES.get(code, "an unsupported format")
        raise AudioFormatError(
            f"{name} uses WAV format code {code} ({kind}); Parley reads PCM, float, µ-law or A-law. "
            "Convert it first, e.g. `ffmpeg -i in.wav -c:a pcm_s16le out.wav`."
        )
    if channels == 0 or rate == 0:
        raise AudioFormatError(f"{name} has an invalid header: {channels} channels at {rate} Hz")
    if bits not in _BITS[code]:
        raise AudioFormatError(f"{name} has {bits}-bit samples, which its format (code {code}) does not allow")
    return _Fmt(code, channels, rate, bits)


def _not_wav(data: bytes, name: str) -> AudioFormatError:
    hint = next(
        (f" (it looks like {kind} file)" for magic, kind in _NOT_WAV_HINTS.items() if data.startswith(magic)), ""
    )
    return AudioFormatError(f"{name} is not a WAV file{hint}")


def _chunks(data: bytes, name: str) -> tuple[_Fmt, bytes]:
    """Find the fmt and data chunks, skipping everything else."""
    _check_riff(data, name)
    fmt, audio, end = _scan(data, name)
    cut_short = audio is None and (end == 12 or end not in (len(data), len(data) + 1))  # last pad byte optional
    if fmt is None:
        if cut_short:
            raise AudioFormatError(f"{name} is truncated: it ends before its fmt chunk")
        raise AudioFormatError(f"{name} has no fmt chunk, so its sample format is unknown")
    if audio is None:
        if cut_short:
            raise AudioFormatError(f"{name} is truncated: it ends before its data chunk")
        raise AudioFormatError(f"{name} has no data chunk")
    return fmt, audio


def _check_riff(data: bytes, name: str) -> None:
    """A RIFF/WAVE header, or an error that says what the bytes are instead."""
    if len(data) < 12:
        if data[:4] == b"RIFF"[: len(data)] and data:
            raise AudioFormatError(f"{name} is truncated: it ends inside the RIFF header")
        raise _not_wav(data, name)
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise _not_wav(data, name)


def _scan(data: bytes, name: str) -> tuple[_Fmt | None, bytes | None, int]:
    """The fmt and data chunks (None where missing) and where the walk over the chunks stopped."""
    fmt: _Fmt | None = None
    audio: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            if body + size > len(data):
                raise AudioFormatError(f"{name} is truncated: it ends inside its fmt chunk")
            fmt = _parse_fmt(data[body : body + size], name)
        elif cid == b"data":
            audio, to_end = _data_chunk(data, body, size)
            if to_end:
                break
        pos = body + size + (size & 1)  # chunks are padded to an even length
    return fmt, audio, pos


def _data_chunk(data: bytes, body: int, size: int) -> tuple[bytes, bool]:
    """The data chunk's audio, and whether it runs to the end of the file (then no chunk follows it)."""
    rest = data[body:]
    streamed = size == _UNKNOWN_SIZE or (size == 0 and rest[:4] not in _KNOWN_CHUNKS)
    if streamed or body + size >= len(data):  # unknown size, or a recording cut short: take what is there
        return rest, True
    return data[body : body + size], False


def _decode(fmt: _Fmt, audio: bytes, name: str) -> Audio:
    width = fmt.bits // 8
    n = len(audio) // (width * fmt.channels)
    if n == 0:
        raise AudioFormatError(f"{name} contains no audio")
    raw = np.frombuffer(audio, dtype=np.uint8, count=n * width * fmt.channels)
    samples: np.ndarray
    if fmt.code == _MULAW:
        samples = ulaw_decode(raw)
    elif fmt.code == _ALAW:
        samples = alaw_decode(raw)
    elif fmt.code == _FLOAT:
        x = raw.view("<f4" if width == 4 else "<f8").astype(np.float64)
        samples = np.clip(np.rint(np.nan_to_num(x * 32768.0)), -32768, 32767).astype(np.int16)
    elif width == 1:
        samples = ((raw.astype(np.int16) - 128) << 8).astype(np.int16)  # 8-bit WAV is unsigned
    else:
        # The top two bytes of a little-endian 16/24/32-bit sample are its int16 value, truncated.
        samples = raw.reshape(-1, width)[:, width - 2 :].copy().view("<i2").reshape(-1).astype(np.int16)
    if fmt.channels > 1:
        samples = samples.reshape(n, fmt.channels)
    return Audio(samples, fmt.sample_rate)


def _load(source: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "the WAV data"
    path = Path(source)
    return path.read_bytes(), f"'{path}'"


def read_wav(source: str | Path | bytes) -> Audio:
    """Read a WAV file (path or bytes) as int16: PCM 8/16/24/32-bit, float, µ-law, A-law, or extensible."""
    data, name = _load(source)
    fmt, audio = _chunks(data, name)
    return _decode(fmt, audio, name)


def load_audio(path: str | Path) -> Audio:
    """Read a WAV file, or a headerless 8 kHz G.711 capture named .ulaw/.ul/.mulaw/.mu or .alaw/.al."""
    decode = _HEADERLESS.get(Path(path).suffix.lower())
    if decode is None:
        return read_wav(path)
    data, name = _load(path)
    if not data:
        raise AudioFormatError(f"{name} contains no audio")
    return Audio(decode(np.frombuffer(data, dtype=np.uint8)), _HEADERLESS_RATE)


def wav_header(sample_rate: int, channels: int, data_bytes: int | None = None) -> bytes:
    """The 44-byte PCM16 WAV header; ``None`` declares unknown sizes, as a streaming writer must at first."""
    return _header(sample_rate, channels, _UNKNOWN_SIZE if data_bytes is None else data_bytes)


def _header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    block = 2 * channels
    riff = _UNKNOWN_SIZE if data_bytes == _UNKNOWN_SIZE else 36 + data_bytes
    return b"".join(
        [
            b"RIFF" + struct.pack("<I", riff) + b"WAVE",
            b"fmt " + struct.pack("<IHHIIHH", 16, _PCM, channels, sample_rate, sample_rate * block, block, 16),
            b"data" + struct.pack("<I", data_bytes),
        ]
    )


class WavWriter:
    """Streams interleaved PCM16 to a WAV file; memory use does not grow with the recording's length.

    Until ``close`` the header declares unknown sizes (0xFFFFFFFF), so a file left by a crash still reads.
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int = 1) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"need a positive sample rate and channel count, got {sample_rate} Hz, {channels} ch")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        self._block = 2 * channels
        self._partial = b""  # bytes of a frame split across write() calls
        self._file = self.path.open("wb")
        self._file.write(_header(sample_rate, channels, _UNKNOWN_SIZE))

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, samples: np.ndarray | bytes) -> None:
        """Append int16 samples shaped (n,) interleaved or (n, channels), or little-endian PCM16 bytes."""
        if self._file.closed:
            raise ValueError(f"cannot write to {self.path}: the WavWriter is closed")
        if isinstance(samples, bytes | bytearray | memoryview):
            data = bytes(samples)
        else:
            arr = np.asarray(samples)
            if arr.dtype != np.int16:
                raise TypeError(f"WavWriter writes int16 samples, got {arr.dtype}")
            if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != self.channels):
                raise ValueError(f"expected shape (n,) or (n, {self.channels}), got {arr.shape}")
            data = arr.astype("<i2", copy=False).tobytes()
        if self._partial:
            data = self._partial + data
        whole = len(data) - len(data) % self._block
        self._partial = data[whole:]
        self._file.write(data[:whole] if self._partial else data)
        self.frames_written += whole // self._block

    def close(self) -> None:
        """Patch the RIFF and data sizes into the header and close the file; a dangling partial frame is dropped."""
        if self._file.closed:
            return
        data_bytes = self.frames_written * self._block
        if 36 + data_bytes <= _UNKNOWN_SIZE:  # larger than 4 GiB: leave "unknown", readers use the rest of file
            self._file.seek(4)
            self._file.write(struct.pack("<I", 36 + data_bytes))
            self._file.seek(40)
            self._file.write(struct.pack("<I", data_bytes))
        self._file.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write int16 samples, mono (n,) or multi-channel (n, channels), as a PCM16 WAV file."""
    arr = np.asarray(samples)
    if arr.ndim not in (1, 2):
        raise ValueError(f"expected samples shaped (n,) or (n, channels), got {arr.shape}")
    with WavWriter(path, sample_rate, 1 if arr.ndim == 1 else arr.shape[1]) as writer:
        writer.write(arr)


def stereo(left: np.ndarray, right: np.ndarray) -> npt.NDArray[np.int16]:
    """Interleave two int16 mono signals into (n, 2), zero-padding the shorter (e.g. caller and agent sides)."""
    if np.asarray(left).dtype != np.int16 or np.asarray(right).dtype != np.int16:
        raise TypeError("stereo expects two int16 signals")
    n = max(len(left), len(right))
    out = np.zeros((n, 2), dtype=np.int16)
    out[: len(left), 0] = left
    out[: len(right), 1] = right
    return out

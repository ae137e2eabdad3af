"""Stereo call recording (caller left, agent right), streamed out as the call goes.

Both sides arrive as 20 ms frames numbered from the call's start; a stereo frame is
written as soon as both sides have it, so memory holds at most the lag between
the two sides, never the call. Where the frames go is a :class:`RecordingSink`: a
local WAV file, or a blob store object uploaded in parts during the call.
"""

from __future__ import annotations

import struct
import uuid
from collections import deque
from pathlib import Path
from typing import Protocol

import numpy as np

from parley.audio import WavWriter, samples_per_frame, wav_header
from parley.metrics import recording_failed

WAV_HEADER_BYTES = 44


def recording_key(tenant_id: uuid.UUID, call_id: uuid.UUID) -> str:
    """Where a live call's recording is stored (and where start-up recovery looks for it)."""
    return f"{tenant_id}/{call_id}.wav"


def wav_format(head: bytes) -> tuple[int, int] | None:
    """(sample rate, bytes per frame) of the 44-byte PCM16 header :func:`wav_header` writes; None otherwise."""
    if len(head) < WAV_HEADER_BYTES or head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt " or head[36:40] != b"data":
        return None
    channels, rate = struct.unpack_from("<HI", head, 22)
    block = struct.unpack_from("<H", head, 32)[0]
    return (rate, block) if rate > 0 and block > 0 and channels > 0 else None


def fixed_wav_head(head: bytes, size: int) -> bytes:
    """The header a streamed WAV cut off at ``size`` bytes (a crash) should have: the sizes of what is there,
    in whole frames; empty when ``head`` is not such a header (the bytes are left alone)."""
    fmt = wav_format(head)
    if fmt is None:
        return b""
    rate, block = fmt
    channels = struct.unpack_from("<H", head, 22)[0]
    return wav_header(rate, channels, max(0, size - WAV_HEADER_BYTES) // block * block)


class RecordingSink(Protocol):
    async def write(self, pcm: bytes) -> None:
        """Append interleaved stereo PCM16."""
        ...

    async def close(self, data_bytes: int) -> None:
        """Finish the WAV, whose audio is ``data_bytes`` long."""
        ...


class FileSink:
    """A local WAV file (offline calls)."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self._writer = WavWriter(Path(path), sample_rate, channels=2)

    async def write(self, pcm: bytes) -> None:
        self._writer.write(pcm)

    async def close(self, data_bytes: int) -> None:
        self._writer.close()


class BlobWriterLike(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self, head: bytes = b"") -> int: ...


class BlobSink:
    """A blob store object: the header declares unknown sizes until close patches them."""

    def __init__(self, writer: BlobWriterLike, sample_rate: int) -> None:
        self._writer = writer
        self._rate = sample_rate
        self._started = False
        self.size = 0

    async def write(self, pcm: bytes) -> None:
        try:
            if not self._started:
                self._started = True
                await self._writer.write(wav_header(self._rate, 2))
            await self._writer.write(pcm)
        except Exception:
            recording_failed("write")  # parley_recording_upload_failures_total: the alert on lost recordings
            raise

    async def close(self, data_bytes: int) -> None:
        try:
            if not self._started:
                await self._writer.write(wav_header(self._rate, 2))
            self.size = await self._writer.close(head=wav_header(self._rate, 2, data_bytes))
        except Exception:
            recording_failed("close")
            raise


class StereoRecorder:
    """Aligns caller and agent frames by call time and streams them to ``sink`` as one stereo WAV."""

    def __init__(self, sink: RecordingSink, sample_rate: int, frame_ms: int = 20) -> None:
        self.sink = sink
        self.sample_rate = sample_rate
        self._frame_bytes = samples_per_frame(sample_rate, frame_ms) * 2
        self._frame_s = frame_ms / 1000
        self._caller: deque[bytes] = deque()
        self._agent: deque[bytes] = deque()
        self._written = 0  # frames
        self._closed = False
        #: frames interleaved and written at a time: per-frame writes cost more than the audio math
        self.batch_frames = 25

    @classmethod
    def to_file(cls, path: str | Path, sample_rate: int, frame_ms: int = 20) -> StereoRecorder:
        return cls(FileSink(path, sample_rate), sample_rate, frame_ms)

    async def caller(self, pcm: bytes, t: float, speech: bool = True) -> None:
        await self._side(self._caller, pcm, t)

    async def agent(self, pcm: bytes, t: float, speech: bool = True) -> None:
        await self._side(self._agent, pcm, t)

    async def _side(self, queue: deque[bytes], pcm: bytes, t: float) -> None:
        if self._closed:
            return
        index = round(t / self._frame_s)
        have = self._written + len(queue)
        silence = bytes(self._frame_bytes)
        for _ in range(index - have):  # a side that skipped frames gets silence there
            queue.append(silence)
        if index < have:
            return  # a late duplicate
        queue.append(pcm if len(pcm) == self._frame_bytes else pcm.ljust(self._frame_bytes, b"\0")[: self._frame_bytes])
        other = self._agent if queue is self._caller else self._caller
        if len(queue) - len(other) > 2 * self.batch_frames:  # the other side is silent (it sends no frames)
            other.extend([silence] * (len(queue) - len(other) - self.batch_frames))
        if len(self._caller) >= self.batch_frames and len(self._agent) >= self.batch_frames:
            await self._flush()

    async def _flush(self) -> None:
        n = min(len(self._caller), len(self._agent))
        if n == 0:
            return
        left = np.frombuffer(b"".join(self._caller.popleft() for _ in range(n)), dtype="<i2")
        right = np.frombuffer(b"".join(self._agent.popleft() for _ in range(n)), dtype="<i2")
        await self.sink.write(np.column_stack([left, right]).astype("<i2").tobytes())
        self._written += n

    @property
    def duration(self) -> float:
        return self._written * self._frame_s

    async def close(self) -> float:
        """Write what is left (the shorter side padded with silence); returns the duration in seconds."""
        if not self._closed:
            silence = bytes(self._frame_bytes)
            while len(self._caller) < len(self._agent):
                self._caller.append(silence)
            while len(self._agent) < len(self._caller):
                self._agent.append(silence)
            await self._flush()
            self._closed = True
            await self.sink.close(self._written * self._frame_bytes * 2)
        return self.duration

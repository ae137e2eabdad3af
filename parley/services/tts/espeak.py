"""espeak-ng: the fallback voice. Robotic, but always available (a Debian package), instant and CPU-cheap.

The ``espeak-ng`` command writes a streaming WAV to stdout (22050 Hz mono PCM16, data size 0x7ffff000 or
0/0xFFFFFFFF since it is unknown); the header is parsed and PCM is yielded as it arrives. The text goes to
the process as one argument after ``--``, never through a shell; a long text goes in pieces of at most
``MAX_PIECE_CHARS`` (one process each, in turn), so no command line is too long and the first audio comes
as soon as for a short one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
from collections.abc import AsyncGenerator
from typing import Annotated

from pydantic import Field

from parley.services.registry import ProviderOptions
from parley.services.tts.base import TTS, registry
from parley.services.tts.text import bounded_pieces

EXECUTABLE = "espeak-ng"
MAX_PIECE_CHARS = 1000
_READ = 4096


class _WavHeader:
    """Incremental RIFF/WAVE parser: feed bytes until it reports where PCM starts."""

    def __init__(self) -> None:
        self.buf = b""
        self.sample_rate: int | None = None

    def feed(self, data: bytes) -> bytes | None:
        """PCM after the header once the ``data`` chunk has started, else None (more bytes needed)."""
        self.buf += data
        if len(self.buf) < 12:
            return None
        if self.buf[:4] != b"RIFF" or self.buf[8:12] != b"WAVE":
            raise RuntimeError("espeak: stdout is not a WAV stream")
        pos = 12
        while len(self.buf) >= pos + 8:
            tag, size = self.buf[pos : pos + 4], struct.unpack_from("<I", self.buf, pos + 4)[0]
            if tag == b"data":  # size is a placeholder while streaming; read to EOF instead
                if self.sample_rate is None:
                    raise RuntimeError("espeak: WAV data before its fmt chunk")
                return self.buf[pos + 8 :]
            if len(self.buf) < pos + 8 + size:
                return None
            if tag == b"fmt ":
                fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", self.buf, pos + 8)
                if (fmt, channels, bits) != (1, 1, 16):
                    raise RuntimeError(f"espeak: expected PCM16 mono, got format {fmt}, {channels} ch, {bits} bit")
                self.sample_rate = rate
            pos += 8 + size + (size & 1)
        return None


@registry.register("espeak")
class EspeakTTS(TTS):
    """One ``espeak-ng`` process per sentence; it is killed when the consumer stops listening."""

    sample_rate = 22050

    class Options(ProviderOptions):
        voice: str = "en-us"
        rate_wpm: Annotated[int, Field(ge=80, le=500)] = 175
        pitch: Annotated[int, Field(ge=0, le=99)] = 50

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or self.Options()
        path = shutil.which(EXECUTABLE)
        if path is None:
            raise RuntimeError("espeak: the espeak-ng command is not installed (apt install espeak-ng)")
        self._exe = path

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        for piece in bounded_pieces(text, MAX_PIECE_CHARS):
            async with contextlib.aclosing(self._speak(piece)) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def _speak(self, text: str) -> AsyncGenerator[bytes, None]:
        """One ``espeak-ng`` process for ``text``; it is killed if the consumer stops listening."""
        o = self.options
        args = ["--stdout", "-v", o.voice, "-s", str(o.rate_wpm), "-p", str(o.pitch), "--", text]
        try:
            proc = await asyncio.create_subprocess_exec(
                self._exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except FileNotFoundError:
            raise RuntimeError(f"espeak: {self._exe} disappeared") from None
        assert proc.stdout is not None and proc.stderr is not None
        header, pcm, odd = _WavHeader(), None, b""
        try:
            while data := await proc.stdout.read(_READ):
                if pcm is None:
                    pcm = header.feed(data)
                    if pcm is None:
                        continue
                    if header.sample_rate != self.sample_rate:
                        raise RuntimeError(f"espeak: voice {o.voice!r} speaks at {header.sample_rate} Hz, not 22050")
                    data = pcm
                data, odd = (odd + data), b""
                if len(data) % 2:
                    data, odd = data[:-1], data[-1:]
                if data:
                    yield data
            stderr = await proc.stderr.read()
            if await proc.wait() != 0 or pcm is None:
                raise RuntimeError(f"espeak: espeak-ng failed ({proc.returncode}): {stderr.decode(errors='replace')}")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

"""One caller turn streamed to a recognizer as it is spoken, so its words are known when the caller pauses.

With a batch STT the transcript costs a round trip after the pause; a streaming one (Deepgram, Google) has
been hearing the turn all along, and at the pause the words so far (finals, then the latest interim) are ready.
Its own end-of-speech signal goes to the turn taker as a cue. If the stream fails, the transcriber falls back to
the batch form with the turn's buffered audio: the caller's words are not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

from parley.audio.resample import Resampler
from parley.redact import redact_text
from parley.services.stt.base import StreamingSTT

log = structlog.get_logger(__name__)
CLOSE_GRACE_S = 2.0  # after the turn, the recognizer's last words and its close handshake


class LiveTranscript:
    """The stream of one turn: feed audio, read the words so far, close when the turn is over."""

    def __init__(
        self,
        stt: StreamingSTT,
        language: str,
        turn_id: int,
        on_endpoint: Callable[[int, float | None], Awaitable[None]],
    ) -> None:
        self.stt = stt
        self.turn_id = turn_id
        self.finals: list[str] = []
        self.interim = ""
        self.failed: BaseException | None = None
        self._language = language
        self._on_endpoint = on_endpoint
        self._audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._resampler: Resampler | None = None
        self._rate = 0
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"live-stt-{turn_id}")

    def feed(self, pcm: bytes, rate: int) -> None:
        if rate != self._rate:
            self._rate = rate
            self._resampler = Resampler(rate, self.stt.sample_rate) if rate != self.stt.sample_rate else None
        self._audio.put_nowait(self._resampler.process(pcm) if self._resampler is not None else pcm)

    def text(self) -> str:
        """The words so far: the settled ones, then the recognizer's current guess."""
        return " ".join(t for t in (*self.finals, self.interim) if t).strip()

    async def words(self, wait_s: float) -> str | None:
        """The words so far; if none yet, wait up to ``wait_s`` for some. None when the stream failed (or said
        nothing in time): the caller then takes the batch path."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while not self.text() and self.failed is None and not self.task.done():
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.text() if self.failed is None and self.text() else None

    def end(self) -> None:
        """The turn is over: no more audio (the recognizer flushes its last words)."""
        self._audio.put_nowait(None)

    async def aclose(self) -> None:
        self.end()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), CLOSE_GRACE_S)
        except (TimeoutError, Exception):
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (pcm := await self._audio.get()) is not None:
            yield pcm

    async def _run(self) -> None:
        try:
            async for event in self.stt.stream(self._chunks(), self._language):
                if event.kind == "final":
                    self.finals.append(event.text.strip())
                    self.interim = ""
                elif event.kind == "interim":
                    self.interim = event.text.strip()
                else:
                    await self._on_endpoint(self.turn_id, event.t)
                self._changed.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the batch path takes over with the buffered audio
            self.failed = exc
            log.warning("live_stt_failed", turn_id=self.turn_id, error=type(exc).__name__,
                        detail=redact_text(str(exc)[:200]))  # fmt: skip
        finally:
            self._changed.set()

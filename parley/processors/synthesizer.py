"""Text-to-speech on the pipeline: each sentence streamed out as audio at the call's rate."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import structlog

from parley.audio import Resampler
from parley.pipeline.frames import AudioOut, Direction, Frame, LLMDone, ReplyDone, SpeakText, StageTime
from parley.pipeline.processor import Processor
from parley.services.tts.base import TTS

log = structlog.get_logger(__name__)


class Synthesizer(Processor):
    """Speaks :class:`SpeakText` in order; the first audio of a turn is stamped for the report."""

    def __init__(self, tts: TTS, sample_rate: int) -> None:
        super().__init__()
        self.tts = tts
        self.sample_rate = sample_rate
        self._stamped: set[int] = set()

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, SpeakText):
            await self._speak(frame)
        elif isinstance(frame, LLMDone):
            await self.push(ReplyDone(turn_id=frame.turn_id))
        else:
            await self.push(frame, direction)

    async def _speak(self, frame: SpeakText) -> None:
        resampler = (
            Resampler(self.tts.sample_rate, self.sample_rate) if self.tts.sample_rate != self.sample_rate else None
        )
        pending: bytes | None = None
        try:
            async with aclosing(self.tts.synthesize(frame.text)) as chunks:
                async for chunk in chunks:
                    pcm = resampler.process(chunk) if resampler else chunk
                    if not pcm:
                        continue
                    if frame.turn_id not in self._stamped:
                        self._stamped.add(frame.turn_id)
                        await self.push(StageTime(turn_id=frame.turn_id, stage="tts_first_audio", t=self.clock.now()))
                    if pending is not None:
                        await self.push(self._out(frame, pending, last=False))
                    pending = pcm
                    await asyncio.sleep(0)  # other calls run between chunks, however fast a TTS yields them
        except Exception as exc:  # a sentence TTS cannot say must not end the call
            log.error("tts_failed", text=frame.text[:80], error=str(exc))
        tail = resampler.flush() if resampler else b""
        pcm = (pending or b"") + tail
        await self.push(self._out(frame, pcm, last=True))

    def _out(self, frame: SpeakText, pcm: bytes, last: bool) -> AudioOut:
        return AudioOut(pcm=pcm, sample_rate=self.sample_rate, turn_id=frame.turn_id, text=frame.text, last=last)

    async def on_interruption(self) -> None:
        # a reply cut before its first audio must stamp again when it is regenerated
        self._stamped.clear()

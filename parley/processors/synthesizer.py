"""Text-to-speech on the pipeline: each sentence streamed out as audio at the call's rate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import aclosing

import structlog

from parley.agent.document import DEFAULT_FALLBACK_LINE
from parley.audio import Resampler
from parley.offload import off_loop
from parley.pipeline.frames import (
    AudioOut,
    CallEvent,
    Direction,
    FailedStage,
    Frame,
    LLMDone,
    ReplyDone,
    ReplyFailed,
    SpeakText,
    Stage,
    StageTime,
)
from parley.pipeline.processor import Processor
from parley.redact import redact_text
from parley.services.fallback.chain import drain_events
from parley.services.tts.base import TTS

log = structlog.get_logger(__name__)

#: makes the fallback voice (the document's ``tts.fallback``), on the first failure only
VoiceFactory = Callable[[], TTS]


class Synthesizer(Processor):
    """Speaks :class:`SpeakText` in order; the first audio of a turn is stamped for the report.

    A sentence TTS cannot say ends its reply (it must not end the call, nor leave the turn owed): the
    fallback line is said by the fallback voice, the rest of that reply is dropped, an error goes up to
    the call record, and the reply closes as usual when the LLM is done.
    """

    def __init__(
        self,
        tts: TTS,
        sample_rate: int,
        fallback_line: str = DEFAULT_FALLBACK_LINE,
        fallback_voice: VoiceFactory | None = None,
    ) -> None:
        super().__init__()
        self.tts = tts
        self.sample_rate = sample_rate
        self.fallback_line = fallback_line.strip()
        self._voice_factory = fallback_voice
        self._voice: TTS | None = None  # made on first need, closed at cleanup
        self._stamped: set[int] = set()
        self._failed: set[int] = set()  # turns whose reply ended at a TTS failure

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, SpeakText):
            if frame.turn_id not in self._failed:
                await self._speak(frame)
        elif isinstance(frame, LLMDone):
            self._failed.discard(frame.turn_id)
            await self.push(ReplyDone(turn_id=frame.turn_id))
        else:
            await self.push(frame, direction)

    async def _speak(self, frame: SpeakText) -> None:
        try:
            await self._say(self.tts, frame.turn_id, frame.text)
        except Exception as exc:
            await self._failed_sentence(frame, exc)
        finally:
            for event in drain_events(self.tts):  # a fallback chain's switches and errors, for the turn's record
                await self.push(CallEvent(turn_id=frame.turn_id, event=event), Direction.UPSTREAM)

    async def _say(self, tts: TTS, turn_id: int, text: str) -> None:
        """Streams ``text`` as audio; on failure the audio already made ends the sentence, and it raises."""
        resampler = Resampler(tts.sample_rate, self.sample_rate) if tts.sample_rate != self.sample_rate else None
        pending: bytes | None = None
        try:
            async with aclosing(tts.synthesize(text)) as chunks:
                async for chunk in chunks:
                    pcm = resampler.process(chunk) if resampler else chunk
                    if not pcm:
                        continue
                    if turn_id not in self._stamped:
                        self._stamped.add(turn_id)
                        await self.push(StageTime(turn_id=turn_id, stage=Stage.TTS_FIRST_AUDIO, t=self.clock.now()))
                    if pending is not None:
                        await self.push(self._out(turn_id, text, pending, last=False))
                    pending = pcm
                    await asyncio.sleep(0)  # other calls run between chunks, however fast a TTS yields them
        except Exception:
            if pending is not None:
                await self.push(self._out(turn_id, text, pending, last=True))
            raise
        tail = resampler.flush() if resampler else b""
        await self.push(self._out(turn_id, text, (pending or b"") + tail, last=True))

    async def _failed_sentence(self, frame: SpeakText, exc: Exception) -> None:
        error = type(exc).__name__
        log.error(
            "reply_failed",
            stage=FailedStage.TTS,
            turn_id=frame.turn_id,
            error=error,
            text=frame.text[:80],
            detail=redact_text(str(exc)[:500]),
        )
        self._failed.add(frame.turn_id)
        said = ""
        voice = await self._fallback() if self.fallback_line else None
        if voice is not None:
            try:
                await self._say(voice, frame.turn_id, self.fallback_line)
                said = self.fallback_line
            except Exception as again:
                log.error("fallback_line_failed", turn_id=frame.turn_id, error=type(again).__name__)
        failed = ReplyFailed(
            message=f"tts: {error}",
            turn_id=frame.turn_id,
            stage=FailedStage.TTS,
            error=error,
            fallback=said,
            t=self.clock.now(),
        )
        await self.push(failed, Direction.UPSTREAM)

    async def _fallback(self) -> TTS | None:
        """The fallback voice, made once; None when there is none (not configured, or it cannot start)."""
        factory, self._voice_factory = self._voice_factory, None
        if factory is not None:
            voice: TTS | None = None
            try:
                voice = await off_loop(factory)
                await voice.prepare()
                self._voice = voice
            except Exception as exc:
                log.error("fallback_voice_unavailable", error=type(exc).__name__, detail=redact_text(str(exc)[:500]))
                if voice is not None:
                    await voice.aclose()
        return self._voice

    def _out(self, turn_id: int, text: str, pcm: bytes, last: bool) -> AudioOut:
        return AudioOut(pcm=pcm, sample_rate=self.sample_rate, turn_id=turn_id, text=text, last=last)

    async def on_interruption(self) -> None:
        # a reply cut before its first audio must stamp again when it is regenerated; and may speak again
        self._stamped.clear()
        self._failed.clear()

    async def cleanup(self) -> None:
        if self._voice is not None:
            voice, self._voice = self._voice, None
            await voice.aclose()

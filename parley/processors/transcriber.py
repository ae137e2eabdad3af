"""Speech-to-text on the pipeline: one transcription per caller pause, off the event loop."""

from __future__ import annotations

import asyncio

import structlog

from parley.audio import pcm16_resample
from parley.pipeline.frames import Direction, Frame, StageTime, Transcript, UserTurn
from parley.pipeline.processor import Processor
from parley.services.stt.base import STT

log = structlog.get_logger(__name__)


class Transcriber(Processor):
    """Transcribes each :class:`UserTurn` as soon as it arrives; a newer one for the turn cancels the older."""

    def __init__(self, stt: STT, language: str = "en") -> None:
        super().__init__()
        self.stt = stt
        self.language = language.split("-")[0]
        self._task: asyncio.Task[None] | None = None

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, UserTurn):
            await self.push(frame, direction)
            if self._task is not None and not self._task.done():
                self._task.cancel()
            self._task = self.spawn(self._transcribe(frame), f"stt-{frame.turn_id}")
            return
        await self.push(frame, direction)

    async def on_interruption(self) -> None:
        await self.cancel_spawned()

    async def _transcribe(self, turn: UserTurn) -> None:
        await self.push(StageTime(turn_id=turn.turn_id, stage="stt_start", t=self.clock.now()))
        pcm = turn.pcm
        if turn.sample_rate != self.stt.sample_rate:
            pcm = pcm16_resample(pcm, turn.sample_rate, self.stt.sample_rate)
        try:
            text = await self.stt.transcribe(pcm, self.language)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("stt_failed", turn_id=turn.turn_id, error=str(exc))
            text = ""
        now = self.clock.now()
        log.info("transcript", turn_id=turn.turn_id, text=text, secs=round(now - turn.t, 3))
        await self.push(StageTime(turn_id=turn.turn_id, stage="stt_final", t=now, text=text))
        await self.push(Transcript(turn_id=turn.turn_id, text=text, t=now))

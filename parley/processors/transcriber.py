"""Speech-to-text on the pipeline: one transcription per caller pause, off the event loop.

Each transcript goes both ways: downstream to the responder (the reply starts on
it) and upstream to the turn taker, whose end-of-turn judge reads it as a cue
("…for", a partial phone number) while the caller's pause is still running.
"""

from __future__ import annotations

import asyncio

import structlog

from parley.audio import pcm16_resample
from parley.pipeline.frames import (
    CallerAudio,
    CallEvent,
    Direction,
    EndOfTurn,
    Frame,
    Stage,
    StageTime,
    SttEndpoint,
    Transcript,
    TurnResumed,
    UserTurn,
)
from parley.pipeline.processor import Processor
from parley.processors.live_stt import LiveTranscript
from parley.services.fallback.chain import drain_events
from parley.services.stt.base import STT, StreamingSTT

log = structlog.get_logger(__name__)
LIVE_WAIT_S = 1.0  # at a pause, how long a stream that has said nothing yet gets before the batch form is asked


class Transcriber(Processor):
    """Transcribes each :class:`UserTurn` as soon as it arrives.

    A barge-in does not cancel a transcription: the caller said those words, and the
    responder decides what to do with them. Only a newer attempt at the same turn
    (after :class:`TurnResumed`) makes the older one worthless.
    """

    def __init__(self, stt: STT, language: str = "en") -> None:
        super().__init__()
        self.stt = stt
        self.language = language.split("-")[0]
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: a streaming recognizer hears each turn as it is spoken (:mod:`.live_stt`); None: batch at each pause
        self.streaming = stt if isinstance(stt, StreamingSTT) else None
        self._live: dict[int, LiveTranscript] = {}

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, CallerAudio):
            self._live_for(frame.turn_id).feed(frame.pcm, frame.sample_rate)
            return  # audio ends here
        if isinstance(frame, UserTurn):
            self._cancel(frame.turn_id)
            self._tasks[frame.turn_id] = self.spawn(self._transcribe(frame), f"stt-{frame.turn_id}")
        elif isinstance(frame, TurnResumed):
            self._cancel(frame.turn_id)
        elif isinstance(frame, EndOfTurn) and (live := self._live.pop(frame.turn_id, None)) is not None:
            self.spawn(live.aclose(), f"live-stt-close-{frame.turn_id}")
        await self.push(frame, direction)

    def _live_for(self, turn_id: int) -> LiveTranscript:
        live = self._live.get(turn_id)
        if live is None:
            assert self.streaming is not None
            for old in [t for t in self._live if t < turn_id]:  # a turn too short to end (a cough): its stream
                self.spawn(self._live.pop(old).aclose(), f"live-stt-close-{old}")
            live = self._live[turn_id] = LiveTranscript(self.streaming, self.language, turn_id, self._endpoint)
        return live

    async def _endpoint(self, turn_id: int, t: float | None) -> None:
        await self.push(SttEndpoint(turn_id=turn_id, t=t), Direction.UPSTREAM)

    async def cleanup(self) -> None:
        lives, self._live = list(self._live.values()), {}
        await asyncio.gather(*(live.aclose() for live in lives), return_exceptions=True)
        await super().cleanup()

    async def _batch(self, turn: UserTurn) -> str:
        """The whole utterance at once (the batch form, or a failed stream's fallback with the same audio)."""
        pcm = turn.pcm
        if turn.sample_rate != self.stt.sample_rate:
            pcm = pcm16_resample(pcm, turn.sample_rate, self.stt.sample_rate)
        try:
            return await self.stt.transcribe(pcm, self.language)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("stt_failed", turn_id=turn.turn_id, error=str(exc))
            return ""

    def _cancel(self, turn_id: int) -> None:
        task = self._tasks.pop(turn_id, None)
        if task is not None and not task.done():
            task.cancel()

    async def _transcribe(self, turn: UserTurn) -> None:
        await self.push(StageTime(turn_id=turn.turn_id, stage=Stage.STT_START, t=self.clock.now()))
        live = self._live.get(turn.turn_id)
        heard = await live.words(LIVE_WAIT_S) if live is not None else None
        text = heard if heard is not None else await self._batch(turn)
        for event in drain_events(self.stt):  # a fallback chain's switches and errors, for the turn's record
            await self.push(CallEvent(turn_id=turn.turn_id, event=event), Direction.UPSTREAM)
        self._tasks.pop(turn.turn_id, None)
        now = self.clock.now()
        log.info("transcript", turn_id=turn.turn_id, text=text, secs=round(now - turn.t, 3))
        await self.push(StageTime(turn_id=turn.turn_id, stage=Stage.STT_FINAL, t=now, text=text))
        # up first: the judge's cue costs nothing, and the reply below starts in the same step
        await self.push(Transcript(turn_id=turn.turn_id, text=text, t=now), Direction.UPSTREAM)
        await self.push(Transcript(turn_id=turn.turn_id, text=text, t=now))

"""Paced playout: agent audio leaves in 20 ms frames against the call clock, never by drifting sleeps.

Frame ``k`` is due at ``start + k * 20 ms`` (absolute deadlines, so scheduling
jitter never accumulates). Audio for a turn is held until that turn is confirmed
(:class:`EndOfTurn`): replies prepared speculatively during the caller's pause wait
here and play the moment the turn ends. On an interruption the unplayed audio is
dropped and the playout reports upstream what the caller actually heard.

An :class:`AgentAction` (hang up, transfer) arrives behind its reply's audio and is
held until that reply has played to the end (when :class:`AgentSpoke` goes up), so
the caller hears the goodbye before the line drops; with nothing owed for its turn
it goes on at once. An interruption drops held actions: the caller is still talking.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from parley.agent.context import heard_part
from parley.audio import FrameSplitter, samples_per_frame
from parley.pipeline.frames import (
    AgentAction,
    AgentSpoke,
    AudioOut,
    Direction,
    EndFrame,
    EndOfTurn,
    Frame,
    ReplyDone,
    Stage,
    StageTime,
    StartFrame,
)
from parley.pipeline.processor import Processor

log = structlog.get_logger(__name__)

#: called for every 20 ms frame: (pcm16, call time, whether it is agent speech rather than silence)
FrameSink = Callable[[bytes, float, bool], Awaitable[None]]
#: how many agent speech frames the far end has confirmed playing (Twilio marks), or None to trust what was sent
PlayedFrames = Callable[[], int | None]


@dataclass
class _Sentence:
    text: str
    received: int = 0  # bytes
    played: int = 0
    complete: bool = False
    first_frame: int | None = None  # index (among all speech frames of the call) of its first frame played


@dataclass
class _Reply:
    turn_id: int
    sentences: list[_Sentence] = field(default_factory=list)
    done: bool = False  # ReplyDone arrived
    started: bool = False  # first frame played

    def heard(self, confirmed_frames: int | None = None, frame_bytes: int = 1) -> str:
        """The words played; with ``confirmed_frames`` only those the far end confirmed it played."""
        parts: list[str] = []
        for s in self.sentences:
            played = s.played
            if confirmed_frames is not None:
                start = s.first_frame if s.first_frame is not None else confirmed_frames
                played = min(played, max(0, confirmed_frames - start) * frame_bytes)
            if played <= 0:
                break
            fraction = 1.0 if s.complete and played >= s.received else played / max(1, s.received)
            part = heard_part(s.text, fraction)
            if part:
                parts.append(part)
            if fraction < 1:
                break
        return " ".join(parts)

    def full_text(self) -> str:
        return " ".join(s.text for s in self.sentences)


class Playout(Processor):
    """The last processor of a call: paces agent audio out to a transport's sink."""

    def __init__(
        self,
        sample_rate: int,
        sink: FrameSink,
        frame_ms: int = 20,
        confirmed: tuple[int, ...] = (0,),
        played_frames: PlayedFrames | None = None,
        idle_silence: bool = True,
    ) -> None:
        super().__init__()
        self._played_frames = played_frames
        #: False: no sink call (and no timer) while there is nothing to play, so an idle call costs nothing
        #: (WebSocket carriers); True: a frame every 20 ms, silence included (RTP, offline recordings)
        self.idle_silence = idle_silence
        self._wake = asyncio.Event()
        self._turn_ended: dict[int, float] = {}  # EndOfTurn's call time, per turn
        self.speech_frames = 0  # agent speech frames sent so far (the numbering far-end confirmations use)
        #: speech frames that left more than one frame period after their slot: a listener with a small
        #: jitter buffer hears a gap there (the event loop was too busy)
        self.late_frames = 0
        self.max_lateness = 0.0
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self._sink = sink
        self._frame_bytes = samples_per_frame(sample_rate, frame_ms) * 2
        self._silence = bytes(self._frame_bytes)
        self._frames: deque[tuple[int, _Sentence, bytes]] = deque()
        self._queued: Counter[int] = Counter()  # frames waiting per turn: no scan of the queue 50 times a second
        self._splitters: dict[int, FrameSplitter] = {}
        self._replies: dict[int, _Reply] = {}
        self._held: dict[int, list[AgentAction]] = {}  # actions waiting for their turn's reply to be heard
        self._confirmed: set[int] = set(confirmed)
        self._ticker: asyncio.Task[None] | None = None
        self.frames_out = 0
        self.speaking = False
        self._playing_turn = 0

    # --- pipeline side ---------------------------------------------------------------

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, AudioOut):
            self._enqueue(frame)
            return
        if isinstance(frame, ReplyDone):
            self._reply(frame.turn_id).done = True
            await self._finish_if_played(frame.turn_id)
            return
        if isinstance(frame, AgentAction):
            if frame.turn_id in self._replies:  # its reply is still owed (speculative, queued or playing)
                self._held.setdefault(frame.turn_id, []).append(frame)
            else:
                await self.push(frame, direction)
            return
        if isinstance(frame, StartFrame):
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="playout")
        elif isinstance(frame, EndOfTurn):
            self._confirmed.add(frame.turn_id)
            self._turn_ended[frame.turn_id] = frame.t
            self._wake.set()
            await self._finish_if_played(frame.turn_id)
        elif isinstance(frame, EndFrame):
            await self._stop_ticker()
            await self._report_owed("reply_cut_by_hangup")  # the record keeps what the caller heard
            self._confirmed.clear()
        await self.push(frame, direction)

    async def _report_owed(self, event: str) -> None:
        """Every confirmed reply still owed reports what was heard of it (maybe nothing), as cut short."""
        confirmed_frames = self._played_frames() if self._played_frames else None
        for turn_id in sorted(self._confirmed):
            reply = self._replies.get(turn_id)
            heard = reply.heard(confirmed_frames, self._frame_bytes) if reply else ""
            log.info(event, turn_id=turn_id, heard=heard)
            await self.push(
                AgentSpoke(turn_id=turn_id, heard_text=heard, interrupted=True, t=self.clock.now()),
                Direction.UPSTREAM,
            )

    async def on_interruption(self) -> None:
        """Drop unplayed audio. Every confirmed reply still owed reports what was heard of it (maybe
        nothing); speculative replies for unconfirmed turns just go."""
        self._frames.clear()
        self._queued.clear()
        self._splitters.clear()
        await self._report_owed("reply_interrupted")
        self._confirmed.clear()
        self._turn_ended.clear()
        self._replies.clear()
        if self._held:
            log.info("agent_actions_dropped", turns=sorted(self._held))
            self._held.clear()
        self.speaking = False

    def _reply(self, turn_id: int) -> _Reply:
        if turn_id not in self._replies:
            self._replies[turn_id] = _Reply(turn_id)
        return self._replies[turn_id]

    def _enqueue(self, frame: AudioOut) -> None:
        reply = self._reply(frame.turn_id)
        if not reply.sentences or reply.sentences[-1].complete or reply.sentences[-1].text != frame.text:
            reply.sentences.append(_Sentence(frame.text))
        sentence = reply.sentences[-1]
        splitter = self._splitters.setdefault(frame.turn_id, FrameSplitter(self.sample_rate, self.frame_ms))
        frames = splitter.feed(frame.pcm)
        if frame.last:
            tail = splitter.flush(pad=True)
            if tail:
                frames.append(tail)
            sentence.complete = True
        for f in frames:
            sentence.received += len(f)
            self._frames.append((frame.turn_id, sentence, f))
            self._queued[frame.turn_id] += 1
        self._wake.set()

    async def _finish_if_played(self, turn_id: int) -> None:
        reply = self._replies.get(turn_id)
        if reply is None or not reply.done or turn_id not in self._confirmed:
            return
        if self._queued[turn_id]:
            return
        del self._replies[turn_id]
        self._confirmed.discard(turn_id)
        self.speaking = False
        await self.push(
            AgentSpoke(turn_id=turn_id, heard_text=reply.full_text(), interrupted=False, t=self.clock.now()),
            Direction.UPSTREAM,
        )
        for action in self._held.pop(turn_id, ()):
            await self.push(action)

    # --- clock side ----------------------------------------------------------------

    async def _tick(self) -> None:
        step = self.frame_ms / 1000
        start = self.clock.now()
        k = 0
        while True:
            if not self.idle_silence and not self._playable():
                self._wake.clear()
                await self._wake.wait()
                k = max(k, math.ceil((self.clock.now() - start) / step - 1e-9))
                continue
            t = start + k * step
            await self.clock.sleep_until(t)
            pcm, speech = self._next_frame()
            if speech:
                lateness = self.clock.now() - t
                if lateness > step:
                    self.late_frames += 1
                self.max_lateness = max(self.max_lateness, lateness)
                await self._mark_started(t)
            try:
                # work in flight for the call's clock: the sink may write the recording in a thread, and a
                # simulated clock that jumped meanwhile would leave the reply behind in call time
                with self.clock.busy():
                    await self._sink(pcm, t, speech)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("playout_sink_failed")
            self.frames_out += 1
            k += 1
            if speech:
                turn_id = self._playing_turn
                if not self._queued[turn_id]:
                    await self._finish_if_played(turn_id)

    def _playable(self) -> bool:
        return bool(self._frames) and self._frames[0][0] in self._confirmed

    def _next_frame(self) -> tuple[bytes, bool]:
        if self._playable():
            turn_id, sentence, pcm = self._frames.popleft()
            self._queued[turn_id] -= 1
            if sentence.first_frame is None:
                sentence.first_frame = self.speech_frames
            self.speech_frames += 1
            sentence.played += len(pcm)
            self._playing_turn = turn_id
            return pcm, True
        return self._silence, False

    async def _mark_started(self, t: float) -> None:
        reply = self._replies.get(self._playing_turn)
        if reply is not None and not reply.started:
            reply.started = True
            self.speaking = True
            # the frame's slot may already be a little in the past: stamp when it really leaves. Caller audio
            # may run up to 100 ms ahead of the clock (a burst is paced back), so the end of turn, stamped in
            # audio time, can lie a little ahead too: the reply is not heard before the turn it answers ended.
            ended = self._turn_ended.pop(reply.turn_id, 0.0)
            stamp = max(t, self.clock.now(), ended)
            await self.push(StageTime(turn_id=reply.turn_id, stage=Stage.FIRST_AUDIO_OUT, t=stamp))

    async def _stop_ticker(self) -> None:
        task, self._ticker = self._ticker, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def cleanup(self) -> None:
        await self._stop_ticker()

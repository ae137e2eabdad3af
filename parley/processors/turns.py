"""Voice activity and turn-taking: when the caller speaks, pauses, resumes and is done.

Latency trick: at the first pause (``pause_secs`` of silence) the utterance so far
is sent on as a speculative :class:`UserTurn`, so speech-to-text and the reply start
while the end-of-turn silence is still running. If the caller speaks again before
``end_of_turn_secs``, :class:`TurnResumed` voids that work and the turn goes on;
otherwise :class:`EndOfTurn` confirms it and the prepared reply plays at once.

How long that silence is depends on ``turn.detector``: a fixed ``end_of_turn_secs``
(``silence``), or, with ``smart_turn``, a judgement taken at the pause by the Smart
Turn model and the speculative transcript (:mod:`parley.services.turn.judge`):
short when the caller sounds finished, up to ``max_wait_secs`` when not. The
transcriber sends each speculative transcript back up here for the judge. While the
caller is at the keypad the wait is never shorter than ``end_of_turn_secs``.

Barge-in: caller speech while the agent is busy with a reply (or its greeting)
interrupts it in the same VAD window that detects the speech. A keypad press does
too (it is deliberate, so ``interruptions.min_speech_secs`` does not apply).

Keypad: digits the agent document does not map to an action (the responder acts on
mapped ones) are collected; when the caller stops pressing for
``actions.keypad_timeout_secs`` or presses ``#``, they become a turn of their own,
``(the caller pressed 1 2 3 on the keypad)``, confirmed at once and answered like
speech. The timeout is checked as caller audio arrives (every transport streams it
continuously), so no timer task is needed and simulated time works unchanged.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import structlog

from parley.agent.document import ActionSettings, InterruptionSettings, TurnSettings, VADSettings
from parley.audio import Resampler, pcm16_to_float
from parley.pipeline.frames import (
    DTMF,
    AgentSpoke,
    AudioIn,
    CallerAudio,
    Direction,
    EndOfTurn,
    Frame,
    Interruption,
    SpeechStarted,
    SpeechStopped,
    Stage,
    StageTime,
    StartFrame,
    SttEndpoint,
    Transcript,
    TurnResumed,
    UserTurn,
    is_dtmf_digit,
)
from parley.pipeline.processor import Processor
from parley.services.turn.judge import EndOfTurnJudge
from parley.services.vad.base import VAD

log = structlog.get_logger(__name__)


def keypad_text(digits: str) -> str:
    """How a keypad entry reads in the conversation (the LLM sees it as the caller's turn)."""
    return f"(the caller pressed {' '.join(digits)} on the keypad)"


def silence_text(secs: float) -> str:
    """How a caller's silence reads in the conversation."""
    return f"(the caller has said nothing for {secs:g} seconds)"


class _State(Enum):
    QUIET = "quiet"
    SPEAKING = "speaking"
    PAUSED = "paused"


class TurnTaker(Processor):
    """Runs the VAD on caller audio and turns it into speech and turn events."""

    def __init__(
        self,
        vad: VAD,
        vad_settings: VADSettings,
        turn: TurnSettings,
        interruptions: InterruptionSettings,
        actions: ActionSettings | None = None,
        judge: EndOfTurnJudge | None = None,
        silence_timeout_secs: float | None = None,
    ) -> None:
        super().__init__()
        #: the caller's silence after the agent spoke that becomes a ``silence_timeout`` turn (None: never)
        self.silence_timeout_secs = silence_timeout_secs
        #: send the caller's audio on as :class:`CallerAudio` while they speak (the call's STT streams)
        self.stream_audio = False
        self._silence_armed = False  # the agent spoke and nobody has since: the silence watch runs
        self._agent_done = 0.0  # call time the agent's latest reply finished playing
        self.vad = vad
        self.settings = vad_settings
        self.turn = turn
        self.interruptions = interruptions
        self.actions = actions or ActionSettings()
        self.judge = judge or EndOfTurnJudge(turn)
        self._rate = 0
        self._window = 0
        self._pending_pcm = b""  # caller audio not yet a whole VAD window
        self._resampler: Resampler | None = None
        self._in_rate = 0
        self._state = _State.QUIET
        self._turn_id = 0
        self._utterance: list[bytes] = []  # PCM16 at self._rate, from pre-roll to now
        self._preroll: list[bytes] = []
        self._speech_start = 0.0
        self._speech_end = 0.0
        self._silence = 0.0
        self._speech_run = 0.0
        self._t = 0.0  # call time at the end of the last window
        # replies still owed to the caller: turn ids whose AgentSpoke has not come back
        self._agent_busy: set[int] = set()
        self._greeting = True
        self._digits: list[str] = []  # keypad entry not yet sent as a turn
        self._digits_end = False  # '#' pressed: the entry is complete
        self._last_digit = float("-inf")  # call time of the latest unmapped digit

    # --- flow ------------------------------------------------------------------

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, AudioIn):
            # caller audio ends here (50 frames a second per call): later stages get whole utterances
            await self._feed(frame)
            await self._maybe_keypad_turn()
            await self._maybe_silence_turn()
            return
        if isinstance(frame, DTMF):
            await self._on_dtmf(frame, direction)
            return
        if isinstance(frame, Transcript) and direction is Direction.UPSTREAM:
            self.judge.heard(frame.turn_id, frame.text)  # a cue for the end-of-turn judge; goes no further
            return
        if isinstance(frame, SttEndpoint):
            self.judge.endpoint(frame.turn_id)  # the recognizer's own end-of-speech: a cue, goes no further
            return
        if isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            self._agent_busy.discard(frame.turn_id)
            if frame.turn_id == 0:
                self._greeting = False
            if frame.heard_text and not self._agent_busy:
                self._silence_armed, self._agent_done = True, self.clock.now()
        elif isinstance(frame, StartFrame):
            self._agent_busy.add(0)  # the greeting
        await self.push(frame, direction)

    @property
    def agent_busy(self) -> bool:
        """A reply (or the greeting) is owed or playing."""
        return bool(self._agent_busy)

    @property
    def idle(self) -> bool:
        """Nobody is speaking and no reply is owed: the call could end here."""
        return self._state is _State.QUIET and not self._agent_busy and not self._digits and not self._digits_end

    # --- audio -----------------------------------------------------------------

    async def _feed(self, frame: AudioIn) -> None:
        pcm = frame.pcm
        if frame.sample_rate != self._in_rate:
            self._configure(frame.sample_rate)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        # the caller's bytes are kept as they came (PCM16) for the utterance; floats only feed the VAD
        raw = self._pending_pcm + pcm if self._pending_pcm else pcm
        samples = pcm16_to_float(raw)
        step = self._window
        n_windows = samples.size // step
        self._pending_pcm = raw[n_windows * step * 2 :]
        pending = samples.size - n_windows * step
        # call time of the first sample of the first whole window (pending samples came before this frame)
        t0 = frame.t + len(frame.pcm) / 2 / frame.sample_rate - (n_windows * step + pending) / self._rate
        # work in flight for the call's clock: a simulated call's clock must not jump to the playout's next frame
        # while a window is being scored (the batched VAD yields to the loop) and its barge-in is on its way
        with self.clock.busy():
            for i in range(n_windows):
                window = samples[i * step : (i + 1) * step]
                start = t0 + i * step / self._rate
                self._t = start + step / self._rate
                prob = await self.vad.probability(window, self._rate)  # batched across calls where the VAD can
                await self._on_window(window, prob, start, raw[i * step * 2 : (i + 1) * step * 2])

    def _configure(self, rate: int) -> None:
        self._in_rate = rate
        self._rate = rate if rate in self.vad.sample_rates else 16000
        self._resampler = Resampler(rate, self._rate) if rate != self._rate else None
        self._window = self.vad.window_samples(self._rate)
        self._pending_pcm = b""
        self.vad.reset()

    async def _on_window(self, window: np.ndarray, prob: float, start: float, pcm: bytes) -> None:
        dur = window.size / self._rate
        speech = prob >= self.settings.threshold
        silence = prob < self.settings.silence_threshold

        if self._state is _State.QUIET:
            self._keep_preroll(pcm)
            if speech:
                await self._speech_began(start)
                self._utterance = [*self._preroll]
                self._preroll = []
                await self._stream(b"".join(self._utterance))
            return

        self._utterance.append(pcm)
        await self._stream(pcm)
        if self._state is _State.SPEAKING:
            if silence:
                self._silence += dur
            else:
                self._silence = 0.0
                self._speech_end = start + dur
                await self._maybe_interrupt(dur)
            if self._silence >= self.turn.pause_secs:
                await self._paused(judge=True)
            elif (long := self._t - self._speech_start) >= self.turn.max_turn_secs and (
                silence or long >= self.turn.max_turn_secs + 5
            ):
                # a monologue is cut at its next breath (a quiet window), never mid-word unless it must
                await self._paused()
                await self._end_turn()
        else:  # PAUSED
            if speech:
                self.judge.reset()
                await self.push(TurnResumed(turn_id=self._turn_id, t=self._t))
                self._state = _State.SPEAKING
                self._silence = 0.0
                self._speech_end = start + dur
                await self.push(SpeechStarted(t=self._t))
                await self._maybe_interrupt(dur)
                return
            self._silence += dur
            needed = await self.judge.silence_needed(self._silence)
            if self._keypad_entry():
                needed = max(needed, self.turn.end_of_turn_secs)  # the judge never hurries a caller at the keypad
            if self._silence >= needed:
                await self._end_turn()

    async def _stream(self, pcm: bytes) -> None:
        """The turn's audio as it comes, for a streaming recognizer (only when the call's STT streams)."""
        if self.stream_audio:
            await self.push(CallerAudio(turn_id=self._turn_id, pcm=pcm, sample_rate=self._rate))

    def _keep_preroll(self, pcm: bytes) -> None:
        self._preroll.append(pcm)
        keep = max(1, int(self.turn.prepad_secs * self._rate / self._window))
        if len(self._preroll) > keep:
            del self._preroll[: len(self._preroll) - keep]

    async def _speech_began(self, start: float) -> None:
        self._state = _State.SPEAKING
        self._speech_start = start
        self._speech_end = start + self._window / self._rate
        self._silence = 0.0
        self._speech_run = 0.0
        self._turn_id += 1
        await self.push(SpeechStarted(t=self._t))
        await self._maybe_interrupt(self._window / self._rate)

    def _may_interrupt(self) -> bool:
        if not self._agent_busy or not self.interruptions.enabled:
            return False
        return not (self._greeting and 0 in self._agent_busy and not self.interruptions.during_greeting)

    async def _maybe_interrupt(self, dur: float) -> None:
        if not self._may_interrupt():
            return
        self._speech_run += dur
        if self._speech_run + 1e-9 < self.interruptions.min_speech_secs:
            return
        await self._interrupt_agent(self._t)

    async def _interrupt_agent(self, t: float) -> None:
        log.info("barge_in", t=round(t, 3), turn_id=self._turn_id)
        self._agent_busy.clear()
        await self.push(Interruption(t=t))

    # --- keypad ------------------------------------------------------------------

    async def _on_dtmf(self, frame: DTMF, direction: Direction) -> None:
        if not is_dtmf_digit(frame.digit):  # it would end up in the LLM's prompt
            log.warning("dtmf_ignored", digit=frame.digit[:8])
            return
        if self._may_interrupt():
            await self._interrupt_agent(self.clock.now())
        await self.push(frame, direction)
        if self.actions.keypad(frame.digit) is not None:
            return  # mapped: the responder acts on it
        if frame.digit == "#":
            self._digits_end = True
        else:
            self._digits.append(frame.digit)
        self._last_digit = self.clock.now()
        await self._maybe_keypad_turn()

    def _keypad_entry(self) -> bool:
        """The caller is entering digits: some are collected, or one was pressed within the keypad timeout."""
        if self._digits or self._digits_end:
            return True
        return self.clock.now() - self._last_digit < self.actions.keypad_timeout_secs

    async def _maybe_keypad_turn(self) -> None:
        """Send the keypad entry on as a turn once it is complete and nobody is talking over it."""
        if not (self._digits or self._digits_end) or self._state is not _State.QUIET:
            return  # a spoken turn in progress: the keypad turn follows it
        now = self.clock.now()
        if not self._digits_end and now - self._last_digit < self.actions.keypad_timeout_secs:
            return
        if self._agent_busy:
            if not self._may_interrupt():
                return  # the agent finishes its reply first
            await self._interrupt_agent(now)
        keypad = "".join(self._digits or ["#"])
        self._digits, self._digits_end = [], False
        self._silence_armed = False
        await self._synthetic_turn(now, keypad_text(keypad), keypad=keypad)

    async def _maybe_silence_turn(self) -> None:
        """After the agent spoke, a caller who says nothing for ``silence_timeout_secs`` gets a turn of their own
        (once per agent reply: the agent must speak again to re-arm it), which a flow's ``silence_timeout`` edge
        routes."""
        if self.silence_timeout_secs is None or not self._silence_armed or not self.idle:
            return
        now = self.clock.now()
        last = max(self._agent_done, self._speech_end, self._last_digit)
        if now - last < self.silence_timeout_secs:
            return
        self._silence_armed = False
        await self._synthetic_turn(now, silence_text(self.silence_timeout_secs), event="silence_timeout")

    async def _synthetic_turn(self, now: float, text: str, keypad: str = "", event: str = "") -> None:
        """A turn that is not speech (a keypad entry, a silence): final at once, with no transcription."""
        self._turn_id += 1
        turn_id = self._turn_id
        log.info("synthetic_turn", turn_id=turn_id, keypad=keypad, reason=event or "keypad")
        self._agent_busy.add(turn_id)
        # the turn counts from the moment the entry was complete (its voice-to-voice is the agent's own latency)
        await self.push(StageTime(turn_id=turn_id, stage=Stage.SPEECH_END, t=now))
        await self.push(StageTime(turn_id=turn_id, stage=Stage.END_OF_TURN, t=now))
        await self.push(EndOfTurn(turn_id=turn_id, t=now))
        await self.push(StageTime(turn_id=turn_id, stage=Stage.STT_FINAL, t=now, text=text))
        await self.push(Transcript(turn_id=turn_id, text=text, t=now, keypad=keypad, event=event))

    async def _paused(self, judge: bool = False) -> None:
        self._state = _State.PAUSED
        await self.push(SpeechStopped(t=self._t, speech_end=self._speech_end))
        if self._speech_end - self._speech_start < self.turn.min_speech_secs:
            return  # a click or a cough: not worth transcribing yet
        pcm = b"".join(self._utterance)
        if judge:
            self.judge.paused(self._turn_id, pcm, self._rate, self.spawn)
        await self.push(
            UserTurn(
                turn_id=self._turn_id,
                pcm=pcm,
                sample_rate=self._rate,
                speech_start=self._speech_start,
                speech_end=self._speech_end,
                t=self._t,
            )
        )

    async def _end_turn(self) -> None:
        self._state = _State.QUIET
        self.judge.reset()
        self._preroll = []
        self._utterance = []
        self._silence = 0.0
        if self._speech_end - self._speech_start < self.turn.min_speech_secs:
            log.debug("turn_too_short", turn_id=self._turn_id, secs=round(self._speech_end - self._speech_start, 3))
            return
        self._agent_busy.add(self._turn_id)
        await self.push(StageTime(turn_id=self._turn_id, stage=Stage.SPEECH_START, t=self._speech_start))
        await self.push(StageTime(turn_id=self._turn_id, stage=Stage.SPEECH_END, t=self._speech_end))
        await self.push(StageTime(turn_id=self._turn_id, stage=Stage.END_OF_TURN, t=self._t))
        await self.push(EndOfTurn(turn_id=self._turn_id, t=self._t))

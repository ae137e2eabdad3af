"""How much silence ends the caller's turn: fixed, or judged by Smart Turn and the transcript.

With ``turn.detector: silence`` the answer is always ``end_of_turn_secs``. With
``smart_turn`` the model hears the utterance at the first pause (when the
speculative turn already starts STT and the reply) and the answer becomes
``complete_wait_secs`` when it judges the turn finished, ``max_wait_secs`` when it
does not. A transcript of that attempt that stops mid-phrase ("…for", "my number is
555") also means "not finished", whenever it arrives before the turn has ended; when
transcripts reach the judge (the pipeline sends them up) a turn that sounds finished
still waits for its transcript (at most ``max_wait_secs``): that costs no latency,
since the reply cannot start before its transcript either.

The decision is taken when the silence first reaches ``complete_wait_secs``. If
the inference (~70 ms, up to ~240 ms on a busy 2-core machine) has not finished
by then, the caller's audio waits for it, bounded by ``_VERDICT_TIMEOUT``: the
turn's timing then depends on the audio alone, never on how fast the machine
happened to be, so simulated time and tests are exact. Any failure falls back to
``end_of_turn_secs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from parley.agent.document import TurnSettings
from parley.services.turn import smart_turn
from parley.services.turn.text import sounds_unfinished

log = structlog.get_logger(__name__)

_VERDICT_TIMEOUT = 1.0
Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


class EndOfTurnJudge:
    """One per call: the silence needed to end the current turn attempt."""

    def __init__(
        self, settings: TurnSettings, model: smart_turn.SmartTurn | None = None, expect_transcripts: bool = False
    ) -> None:
        self.settings = settings
        self.model = model
        if model is None and settings.detector == "smart_turn":
            try:
                self.model = smart_turn.shared()
            except Exception as exc:  # a missing or broken model must not take the call down
                log.warning("smart_turn_unavailable", error=str(exc), fallback="silence")
        self._task: asyncio.Task[float] | None = None
        self._turn_id = 0
        self._text: str | None = None  # this attempt's transcript, once it has arrived
        # transcripts reach the judge (the pipeline sends them up): known from the first one, or told
        self._transcripts = expect_transcripts
        self._wait: float | None = None
        self.probabilities: list[float] = []  # every verdict of this call, for benches and logs

    def paused(self, turn_id: int, pcm: bytes, sample_rate: int, spawn: Spawn) -> None:
        """The caller paused: start judging this attempt (replaces any earlier one)."""
        self.reset()
        self._turn_id = turn_id
        if self.model is not None:
            self._task = spawn(self.model.predict(pcm, sample_rate), f"smart-turn-{turn_id}")

    def heard(self, turn_id: int, text: str) -> None:
        """The speculative transcript of attempt ``turn_id`` arrived: a late "unfinished" still extends the wait."""
        self._transcripts = True
        if turn_id != self._turn_id:
            return
        self._text = text
        if self._wait is not None and self._wait < self.settings.max_wait_secs and sounds_unfinished(text):
            log.info("turn_verdict_revised", turn_id=turn_id, wait=self.settings.max_wait_secs)
            self._wait = self.settings.max_wait_secs

    def reset(self) -> None:
        """The caller spoke again (or the turn ended): the pending judgement is void."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task, self._text, self._wait = None, None, None

    async def silence_needed(self, silence: float) -> float:
        """Silence (seconds) after which the current attempt ends, given ``silence`` so far."""
        s = self.settings
        if self._task is None and self._wait is None:
            return s.end_of_turn_secs
        if silence + 1e-9 < s.complete_wait_secs:
            return s.complete_wait_secs  # too early to decide: nothing can end before this anyway
        if self._wait is None:
            self._wait = await self._decide()
        if self._wait < s.max_wait_secs and self._transcripts and self._text is None:
            # "finished" by the sound, but the transcript is still coming: wait for it (the reply needs it anyway)
            return max(self._wait, min(silence + 0.001, s.max_wait_secs))
        return self._wait

    async def _decide(self) -> float:
        s, task = self.settings, self._task
        assert task is not None
        done, _ = await asyncio.wait({task}, timeout=_VERDICT_TIMEOUT)  # never raises the task's own error
        if not done or task.cancelled() or task.exception() is not None:
            error = "timeout" if not done else "cancelled" if task.cancelled() else repr(task.exception())
            log.warning("smart_turn_failed", turn_id=self._turn_id, error=error, fallback=s.end_of_turn_secs)
            return s.end_of_turn_secs
        p = task.result()
        self.probabilities.append(p)
        unfinished_text = bool(self._text) and sounds_unfinished(self._text or "")
        finished = p >= s.complete_threshold and not unfinished_text
        wait = s.complete_wait_secs if finished else s.max_wait_secs
        log.info("turn_verdict", turn_id=self._turn_id, p=round(p, 3), text_unfinished=unfinished_text, wait=wait)
        return wait

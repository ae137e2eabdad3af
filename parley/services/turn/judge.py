"""How much silence ends the caller's turn: fixed, or judged by Smart Turn and the transcript.

With ``turn.detector: silence`` the answer is always ``end_of_turn_secs``. With
``smart_turn`` the model hears the utterance at the first pause (when the
speculative turn already starts STT and the reply), and the speculative transcript
is read for cues (:mod:`parley.services.turn.text`). The wait is then:

* ``max_wait_secs`` when the transcript stops mid-phrase ("…for", "could you tell
  me", a partial phone number), whatever the model heard;
* ``end_of_turn_secs`` (never shorter) while the caller is dictating a number;
* ``complete_wait_secs`` when the model says finished (P ≥ ``complete_threshold``);
* when it says not finished: ``end_of_turn_secs`` if it is unsure (P ≥ a third of
  the threshold) and the transcript is a punctuated sentence, else ``max_wait_secs``.

Transcripts reach the judge because the transcriber sends each one upstream too.
A turn that sounds finished still waits for its transcript (at most
``max_wait_secs``): that costs no latency, since the reply cannot start before its
transcript either, and it is what catches "Could you tell me…" said with a falling
voice. The wait is recomputed on every window, so a transcript that arrives late
still lengthens (or shortens) it.

The model's verdict is taken when the silence first reaches ``complete_wait_secs``,
and the model only starts ``_LEAD`` before that (at ~0.1 s of silence with the
defaults), not at the first pause: most pauses between words end sooner, and an
inference the caller's next word would void is never run. If the transcript is
already in by then and decides alone (it stops mid-phrase, or is a number being
dictated), the model is not run at all; and where transcripts come (a call), it
waits for the transcript, which the turn cannot end without anyway: the reply is
prepared from that transcript and takes longer than the inference, so the verdict
is still in first. Inferences nobody needs are what Smart Turn costs most at many
calls per core (``bench/listener.py``). If the inference
(~70 ms, up to ~240 ms on a busy 2-core machine) has not finished by then, the
caller's audio waits for it, bounded by ``_VERDICT_TIMEOUT``: the turn's timing
then depends on the audio alone, never on how fast the machine happened to be, so
simulated time and tests are exact. Any failure falls back to ``end_of_turn_secs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from parley.agent.document import TurnSettings
from parley.services.turn import smart_turn
from parley.services.turn.text import dictating, sounds_finished, sounds_unfinished

log = structlog.get_logger(__name__)

_VERDICT_TIMEOUT = 1.0
_LEAD = 0.1  # the model starts this long before its verdict is due (~50–70 ms of inference, and a margin)
_UNSURE = 1 / 3  # P at or above this fraction of the threshold: "not finished" is a guess the transcript may outweigh
Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


class EndOfTurnJudge:
    """One per call: the silence needed to end the current turn attempt."""

    def __init__(
        self, settings: TurnSettings, model: smart_turn.SmartTurn | None = None, expect_transcripts: bool = False
    ) -> None:
        self.settings = settings
        self.model = model if settings.detector == "smart_turn" else None
        if model is None and settings.detector == "smart_turn":
            try:
                self.model = smart_turn.shared()
            except Exception as exc:  # a missing or broken model must not take the call down
                log.warning("smart_turn_unavailable", error=str(exc), fallback="silence")
        self._task: asyncio.Task[float] | None = None
        self._pending: tuple[bytes, int, Spawn] | None = None  # this attempt's audio, until the model starts
        self._judging = False  # this attempt is judged by the model (pending, running, or decided by its text)
        self._turn_id = 0
        self._endpoint: int | None = None  # the turn a streaming recognizer said is over
        self._text: str | None = None  # this attempt's transcript, once it has arrived
        # transcripts reach the judge (the pipeline sends them up): known from the first one, or told
        self._transcripts = expect_transcripts
        self._p: float | None = None  # this attempt's verdict, once taken
        self._failed = False
        self._logged: float | None = None
        self.probabilities: list[float] = []  # every verdict of this call, for benches and logs

    def paused(self, turn_id: int, pcm: bytes, sample_rate: int, spawn: Spawn) -> None:
        """The caller paused: start judging this attempt (replaces any earlier one; a recognizer's endpoint for
        the same speech, which may come before the VAD's pause, is kept)."""
        self.reset(keep_endpoint=self._endpoint == turn_id)
        self._turn_id = turn_id
        if self.model is not None:
            self._judging = True
            self._pending = (pcm, sample_rate, spawn)  # started by silence_needed, once it can matter

    def _start_model(self) -> None:
        """Run the model on the paused attempt, unless its transcript already decides the wait alone."""
        assert self.model is not None and self._pending is not None
        pcm, sample_rate, spawn = self._pending
        self._pending = None
        text = self._text or ""
        if text and (sounds_unfinished(text) or dictating(text)):
            return  # the verdict could not change the wait: spare the inference
        self._task = spawn(self.model.predict(pcm, sample_rate), f"smart-turn-{self._turn_id}")

    def heard(self, turn_id: int, text: str) -> None:
        """The speculative transcript of attempt ``turn_id`` arrived: the next window's wait takes it into account."""
        self._transcripts = True
        if turn_id == self._turn_id and (self._judging or self._endpoint == turn_id):
            self._text = text

    def endpoint(self, turn_id: int) -> None:
        """A streaming recognizer's own end-of-speech for turn ``turn_id`` (Deepgram's ``speech_final``, Google's
        end of utterance): evidence the caller finished, weighed like a confident Smart Turn verdict."""
        self._endpoint = turn_id

    def reset(self, keep_endpoint: bool = False) -> None:
        """The caller spoke again (or the turn ended): the pending judgement is void."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task, self._text, self._p, self._failed, self._logged = None, None, None, False, None
        self._pending, self._judging = None, False
        if not keep_endpoint:
            self._endpoint = None

    async def silence_needed(self, silence: float) -> float:
        """Silence (seconds) after which the current attempt ends, given ``silence`` so far."""
        s = self.settings
        if self._endpoint is not None and self._endpoint == self._turn_id:
            return self._endpointed_wait(silence)
        if not self._judging:
            return s.end_of_turn_secs
        text_coming = self._transcripts and self._text is None
        if self._pending is not None and not text_coming and silence + 1e-9 >= s.complete_wait_secs - _LEAD:
            self._start_model()
        if silence + 1e-9 < s.complete_wait_secs:
            return s.complete_wait_secs  # too early to decide: nothing can end before this anyway
        if self._task is not None and self._p is None and not self._failed:
            await self._decide()
        wait = self._wait()
        if wait < s.max_wait_secs and self._transcripts and self._text is None:
            # not "unfinished" by the sound, but the transcript is still coming: wait for it (the reply needs it)
            return max(wait, min(silence + 0.001, s.max_wait_secs))
        if wait != self._logged:
            self._logged = wait
            log.info("turn_wait", turn_id=self._turn_id, p=self._p, text=self._text is not None, wait=wait)
        return wait

    def _endpointed_wait(self, silence: float) -> float:
        """The wait once the recognizer said the caller finished: short, unless the words say otherwise."""
        s, text = self.settings, self._text or ""
        if text and sounds_unfinished(text):
            return s.max_wait_secs
        if text and dictating(text):
            return s.end_of_turn_secs
        if not text and self._transcripts:
            return max(s.complete_wait_secs, min(silence + 0.001, s.max_wait_secs))  # its transcript is coming
        return min(s.complete_wait_secs, s.end_of_turn_secs)

    def _wait(self) -> float:
        """The wait this attempt's verdict and transcript call for."""
        s, text = self.settings, self._text or ""
        if text and sounds_unfinished(text):
            return s.max_wait_secs
        if self._failed or self._p is None:
            return s.end_of_turn_secs
        if text and dictating(text):
            return s.end_of_turn_secs  # a whole number: the caller may still add to it, never cut it short
        if self._p >= s.complete_threshold:
            return s.complete_wait_secs
        if self._p >= s.complete_threshold * _UNSURE and text and sounds_finished(text):
            return min(max(s.end_of_turn_secs, s.complete_wait_secs), s.max_wait_secs)
        return s.max_wait_secs

    async def _decide(self) -> None:
        task = self._task
        assert task is not None
        done, _ = await asyncio.wait({task}, timeout=_VERDICT_TIMEOUT)  # never raises the task's own error
        if not done or task.cancelled() or task.exception() is not None:
            error = "timeout" if not done else "cancelled" if task.cancelled() else repr(task.exception())
            log.warning(
                "smart_turn_failed", turn_id=self._turn_id, error=error, fallback=self.settings.end_of_turn_secs
            )
            self._failed = True
            return
        self._p = task.result()
        self.probabilities.append(self._p)

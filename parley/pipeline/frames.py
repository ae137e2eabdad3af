"""Typed frames that flow through a call's pipeline.

Two priority classes, as in Pipecat: a :class:`SystemFrame` is handled the moment it
is pushed and survives an interruption; a :class:`DataFrame` waits in the
processor's queue and is dropped when the caller interrupts. Caller audio is a
system frame on purpose: dropping it would lose the caller's words.

A frame type exists only where some processor must tell it apart.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Literal, TypeGuard, get_args

_ids = itertools.count(1)


class Direction(Enum):
    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"


class Stage(StrEnum):
    """What a :class:`StageTime` stamps; the values are the keys of a turn's ``times`` in the call record."""

    SPEECH_START = "speech_start"  # where the caller's speech began in the audio, as the VAD heard it
    SPEECH_END = "speech_end"
    END_OF_TURN = "end_of_turn"
    STT_START = "stt_start"
    STT_FINAL = "stt_final"
    LLM_FIRST_TOKEN = "llm_first_token"
    LLM_DONE = "llm_done"
    LLM_CUT = "llm_cut"  # talked over mid-generation
    LLM_FAILED = "llm_failed"  # the LLM raised: the reply ended with the fallback line
    TTS_FIRST_AUDIO = "tts_first_audio"
    FIRST_AUDIO_OUT = "first_audio_out"
    AGENT_END = "agent_end"  # the reply's audio finished playing or was cut (the turn log's, from AgentSpoke)


class FailedStage(StrEnum):
    """The model call whose failure ended a reply (:class:`ReplyFailed`)."""

    LLM = "llm"
    TTS = "tts"


DtmfDigit = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#", "A", "B", "C", "D"]
DTMF_DIGITS = "".join(get_args(DtmfDigit))


def is_dtmf_digit(value: object) -> TypeGuard[DtmfDigit]:
    """One keypad key (anything else must not reach the LLM's prompt or an action)."""
    return isinstance(value, str) and len(value) == 1 and value in DTMF_DIGITS


@dataclass
class Frame:
    """Base class; ``id`` orders frames for logs and tests."""

    id: int = field(default_factory=lambda: next(_ids), init=False, repr=False)


@dataclass
class SystemFrame(Frame):
    """Handled at once, never queued behind data, never dropped."""


@dataclass
class DataFrame(Frame):
    """Queued in order; an interruption drops the ones not yet handled."""


# --- lifecycle -----------------------------------------------------------------


@dataclass
class StartFrame(SystemFrame):
    """First frame of a call: processors open their resources."""

    sample_rate: int = 16000


class EndReason(StrEnum):
    """Why a call ended, as recorded (``end_reason``). Open-ended on purpose: a carrier's own reason
    (``stream-…``) or a failure (``error: …``, ``dial-failed: …``) is recorded as it comes."""

    ENDED = "ended"
    CALLER_HANGUP = "caller-hangup"
    AGENT_HANGUP = "agent-hangup"
    TRANSFERRED = "transferred"
    CLIENT_DISCONNECTED = "client-disconnected"
    INPUT_ENDED = "input-ended"  # an offline call's audio ran out
    CANCELLED = "cancelled"
    NOT_ANSWERED = "not-answered"
    SERVER_RESTART = "server-restart"
    WORKER_CRASHED = "worker-crashed"


@dataclass
class EndFrame(SystemFrame):
    """The call ends; ``reason`` is recorded (an :class:`EndReason`, or a carrier's or an error's own)."""

    reason: str = EndReason.ENDED


@dataclass
class ErrorFrame(SystemFrame):
    """A processor failed; travels upstream to the session, which decides."""

    message: str = ""


@dataclass
class ReplyFailed(ErrorFrame):
    """A model call failed during turn ``turn_id``'s reply; the reply ended there, with the fallback line.

    ``error`` is the exception's type name only (a message may quote a URL or a key). ``fallback`` is what the
    caller is told instead ("" when nothing could be said: the turn still closes, in silence).
    """

    turn_id: int = 0
    stage: FailedStage = FailedStage.LLM
    error: str = ""
    fallback: str = ""
    t: float = 0.0


# --- caller side ---------------------------------------------------------------


@dataclass
class AudioIn(SystemFrame):
    """Caller audio: PCM16 mono at ``sample_rate``; ``t`` is its call time in seconds."""

    pcm: bytes = b""
    sample_rate: int = 16000
    t: float = 0.0


@dataclass
class SpeechStarted(SystemFrame):
    """VAD heard the caller start speaking at call time ``t``."""

    t: float = 0.0


@dataclass
class SpeechStopped(SystemFrame):
    """The caller paused. ``speech_end`` is where speech ended in the audio; ``t`` when VAD decided."""

    t: float = 0.0
    speech_end: float = 0.0


@dataclass
class CallerAudio(SystemFrame):
    """The caller's audio of turn ``turn_id`` as it is heard (pre-roll first), for a streaming recognizer.

    Sent by the turn taker only when the call's STT streams; the batch path still gets the whole utterance in
    :class:`UserTurn`.
    """

    turn_id: int = 0
    pcm: bytes = b""
    sample_rate: int = 16000


@dataclass
class SttEndpoint(SystemFrame):
    """Upstream from the transcriber: the streaming recognizer says the caller finished speaking (its own
    endpointing), a cue for the turn taker's judge. ``t``: audio time in the turn's stream, where known."""

    turn_id: int = 0
    t: float | None = None


@dataclass
class UserTurn(SystemFrame):
    """A caller utterance, as audio, sent at the caller's first pause.

    Speculative: STT and the reply start on it while the end-of-turn silence is
    still running. :class:`EndOfTurn` confirms it; :class:`TurnResumed` voids it.
    """

    turn_id: int = 0
    pcm: bytes = b""
    sample_rate: int = 16000
    speech_start: float = 0.0
    speech_end: float = 0.0
    t: float = 0.0


@dataclass
class EndOfTurn(SystemFrame):
    """The turn detector decided turn ``turn_id`` is over at call time ``t``."""

    turn_id: int = 0
    t: float = 0.0


@dataclass
class Interruption(SystemFrame):
    """The caller barged in over the agent: drop queued replies, flush playout."""

    t: float = 0.0


@dataclass
class TurnResumed(Interruption):
    """The caller spoke again before end of turn: speculative work for ``turn_id`` is void.

    An interruption too (queued speculative text and audio are dropped the same
    way), but not one the caller heard: nothing of this turn was played yet.
    """

    turn_id: int = 0


@dataclass
class Transcript(SystemFrame):
    """Speech-to-text result for a turn (speculative until :class:`EndOfTurn`).

    A turn the turn taker made itself says why: ``keypad`` holds the digits of a keypad entry, ``event`` is
    ``silence_timeout`` when the caller said nothing for the configured time (``text`` then describes it).
    """

    turn_id: int = 0
    text: str = ""
    t: float = 0.0
    keypad: str = ""
    event: str = ""


@dataclass
class DTMF(SystemFrame):
    """A keypad digit from the caller."""

    digit: str = ""
    t: float = 0.0


# --- agent side ----------------------------------------------------------------


@dataclass
class LLMText(DataFrame):
    """A piece of the agent's reply as the LLM writes it."""

    turn_id: int = 0
    text: str = ""


@dataclass
class LLMDone(DataFrame):
    """The LLM finished the reply for ``turn_id``."""

    turn_id: int = 0


@dataclass
class SpeakText(DataFrame):
    """One sentence (or clause) for TTS to speak."""

    turn_id: int = 0
    text: str = ""
    greeting: bool = False


@dataclass
class AudioOut(DataFrame):
    """Agent audio: PCM16 mono; ``text`` is the sentence it belongs to, ``last`` ends that sentence."""

    pcm: bytes = b""
    sample_rate: int = 16000
    turn_id: int = 0
    text: str = ""
    last: bool = False


@dataclass
class ReplyDone(DataFrame):
    """No more agent audio for ``turn_id``: the reply is complete."""

    turn_id: int = 0


@dataclass
class StageTime(SystemFrame):
    """A stage stamps when it did something for a turn; the report collects these."""

    turn_id: int = 0
    stage: Stage = Stage.SPEECH_END
    t: float = 0.0
    text: str | None = None


@dataclass
class AgentSpoke(SystemFrame):
    """Upstream from the output: what the caller actually heard of a reply.

    ``interrupted`` replies keep only ``heard_text`` in the conversation context.
    """

    turn_id: int = 0
    heard_text: str = ""
    interrupted: bool = False
    t: float = 0.0


@dataclass
class AgentAction(DataFrame):
    """The agent acts on the call (``hang_up``, ``transfer``) once the reply before it has been heard.

    It travels behind the reply's audio, so the playout releases it only when that
    audio has played; the live call then asks its transport to carry it out.
    """

    turn_id: int = 0
    action: str = ""
    target: str = ""
    reason: str = ""
    #: why the agent may not do this (the document does not allow it): recorded, never carried out
    refused: str = ""


@dataclass
class CallEvent(SystemFrame):
    """Something the agent's mind did that belongs on the call record: a tool call, a flow's routing decision.

    Pushed upstream; ``event`` is the record's JSON (``type``, ``turn``, ...), already redacted.
    """

    turn_id: int = 0
    event: dict[str, Any] = field(default_factory=dict)

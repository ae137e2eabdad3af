"""Per-turn record of a call, built from the frames that leave the pipeline.

Times are seconds from the call's start on the call clock. Voice-to-voice latency
is the first agent audio out minus the end of the caller's speech as the VAD heard it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from parley.pipeline.frames import (
    AgentSpoke,
    CallEvent,
    Direction,
    Frame,
    ReplyFailed,
    Stage,
    StageTime,
    Transcript,
)

#: stamps that carry the text the LLM wrote (cut: talked over; failed: the LLM raised part-way)
_GENERATED = (Stage.LLM_DONE, Stage.LLM_CUT, Stage.LLM_FAILED)


@dataclass
class TurnRecord:
    turn: int
    caller_text: str = ""
    agent_text: str = ""
    agent_text_generated: str = ""
    interrupted: bool = False
    times: dict[str, float] = field(default_factory=dict)
    #: what the agent's mind did this turn (tool calls, routing decisions), as on the call record
    events: list[dict[str, Any]] = field(default_factory=list)
    #: the knowledge-base chunks the reply was given (its retrieval's, then its ``search_knowledge`` calls')
    citations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def voice_to_voice(self) -> float | None:
        if Stage.FIRST_AUDIO_OUT in self.times and Stage.SPEECH_END in self.times:
            return self.times[Stage.FIRST_AUDIO_OUT] - self.times[Stage.SPEECH_END]
        return None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["times"] = {k: round(v, 3) for k, v in sorted(self.times.items(), key=lambda kv: kv[1])}
        v2v = self.voice_to_voice
        d["voice_to_voice"] = round(v2v, 3) if v2v is not None else None
        return d


class TurnLog:
    """A pipeline observer that keeps one :class:`TurnRecord` per confirmed caller turn (0 is the greeting)."""

    def __init__(self) -> None:
        self.turns: dict[int, TurnRecord] = {}

    def __call__(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StageTime):
            times = self._record(frame.turn_id).times
            times[str(frame.stage)] = frame.t  # a plain str key: the record is JSON
            if frame.stage in _GENERATED and frame.text is not None:
                self._record(frame.turn_id).agent_text_generated = frame.text
        elif isinstance(frame, Transcript):
            self._record(frame.turn_id).caller_text = frame.text
        elif isinstance(frame, CallEvent):
            rec = self._record(frame.turn_id)
            rec.events.append(frame.event)
            _cite(rec, frame.event)
        elif isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            rec = self._record(frame.turn_id)
            rec.agent_text = frame.heard_text
            rec.interrupted = frame.interrupted
            rec.times[str(Stage.AGENT_END)] = frame.t  # the agent's speech on the timeline ends here

    def _record(self, turn_id: int) -> TurnRecord:
        if turn_id not in self.turns:
            self.turns[turn_id] = TurnRecord(turn_id)
        return self.turns[turn_id]

    def caller_turns(self) -> list[TurnRecord]:
        """Turns the turn detector confirmed (speculative attempts that were resumed are folded in)."""
        return [r for tid, r in sorted(self.turns.items()) if tid > 0 and Stage.END_OF_TURN in r.times]

    @property
    def greeting(self) -> TurnRecord | None:
        return self.turns.get(0)


def _cite(rec: TurnRecord, event: dict[str, Any]) -> None:
    """A turn's citations: a retrieval event replaces them (a later reply to the turn supersedes an earlier
    one), a tool call's are added to them."""
    cited = event.get("citations")
    if event.get("type") == "knowledge":
        rec.citations = list(cited or [])
    elif cited:  # a chunk already cited keeps its first entry (its score was the query's)
        known = {c.get("chunk_id") for c in rec.citations}
        rec.citations += [c for c in cited if c.get("chunk_id") not in known]


def error_event(frame: ReplyFailed) -> dict[str, Any]:
    """The call record's ``error`` event for a reply that failed: which stage, the error's type (never its
    message: it may quote a URL or a key) and what the caller was told instead ("" when nothing was said)."""
    return {
        "type": "error",
        "turn": frame.turn_id,
        "stage": str(frame.stage),
        "error": frame.error,
        "fallback": frame.fallback,
        "t": round(frame.t, 3),
    }

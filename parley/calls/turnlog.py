"""Per-turn record of a call, built from the frames that leave the pipeline.

Times are seconds from the call's start on the call clock. Voice-to-voice latency
is the first agent audio out minus the end of the caller's speech as the VAD heard it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from parley.pipeline.frames import AgentSpoke, Direction, Frame, StageTime, Transcript

STAGES = ("speech_end", "end_of_turn", "stt_final", "llm_first_token", "tts_first_audio", "first_audio_out")


@dataclass
class TurnRecord:
    turn: int
    caller_text: str = ""
    agent_text: str = ""
    agent_text_generated: str = ""
    interrupted: bool = False
    times: dict[str, float] = field(default_factory=dict)

    @property
    def voice_to_voice(self) -> float | None:
        if "first_audio_out" in self.times and "speech_end" in self.times:
            return self.times["first_audio_out"] - self.times["speech_end"]
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
            times[frame.stage] = frame.t
            if frame.stage in ("llm_done", "llm_cut") and frame.text is not None:  # llm_cut: talked over
                self._record(frame.turn_id).agent_text_generated = frame.text
        elif isinstance(frame, Transcript):
            self._record(frame.turn_id).caller_text = frame.text
        elif isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            rec = self._record(frame.turn_id)
            rec.agent_text = frame.heard_text
            rec.interrupted = frame.interrupted

    def _record(self, turn_id: int) -> TurnRecord:
        if turn_id not in self.turns:
            self.turns[turn_id] = TurnRecord(turn_id)
        return self.turns[turn_id]

    def caller_turns(self) -> list[TurnRecord]:
        """Turns the turn detector confirmed (speculative attempts that were resumed are folded in)."""
        return [r for tid, r in sorted(self.turns.items()) if tid > 0 and "end_of_turn" in r.times]

    @property
    def greeting(self) -> TurnRecord | None:
        return self.turns.get(0)

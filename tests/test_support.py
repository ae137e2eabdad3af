"""The test kit itself (tests/support/): the call-record reader passes and fails as it says, the frame runner
returns what came out of each end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.calls.simulate import CallReport
from parley.calls.turnlog import TurnRecord
from parley.pipeline.frames import (
    AgentSpoke,
    Direction,
    EndFrame,
    ErrorFrame,
    Frame,
    LLMText,
    StartFrame,
    Transcript,
)
from parley.pipeline.processor import Processor

from .support.calls import read_call
from .support.frames import Upstream, Wait, run_frames

# As GET /v1/calls/{id} returns it (fields the reader does not read left out)
CALL: dict[str, Any] = {
    "status": "ended",
    "turns": [
        {"turn": 0, "caller_text": "", "agent_text": "Hi there.", "interrupted": False, "times": {}},
        {"turn": 1, "caller_text": "Is there parking?", "agent_text": "Yes, behind the building.", "interrupted": False,
         "times": {"end_of_turn": 2.1}},
        {"turn": 2, "caller_text": "Goodbye", "agent_text": "Goodbye, have a nice", "interrupted": True, "times": {}},
    ],
    "events": [
        {"t": 1.0, "kind": "dtmf", "data": {"digit": "5"}, "created_at": "2026-01-01T00:00:00Z"},
        {"t": 4.0, "kind": "action", "data": {"action": "hang_up", "result": "done"}, "created_at": "…"},
    ],
}  # fmt: skip


def test_the_reader_follows_the_conversation() -> None:
    call = read_call(CALL)
    call.expect.greeting().agent_replied("hi there")
    call.expect.next_turn().caller_said("parking").agent_replied()
    call.expect.next_turn().caller_said("bye", "farewell").agent_replied("goodbye").was_interrupted()
    call.expect.no_more_turns()
    call.expect.contains_turn(caller="PARKING", agent=("behind", "nowhere"))
    call.expect.next_event("action").has(action="hang_up")
    call.expect.only_event("dtmf").has(digit="5")
    call.expect.contains_event("action", result="done")


def test_a_failed_expectation_says_what_the_call_held() -> None:
    call = read_call(CALL)
    with pytest.raises(AssertionError, match=r"turn 1: expected the caller to say 'hours'") as failed:
        call.expect.next_turn().caller_said("hours")
    assert "turn 1: caller 'Is there parking?' / agent 'Yes, behind the building.'" in str(failed.value)
    with pytest.raises(AssertionError, match=r"expected no caller turn after 1; the call had 2"):
        call.expect.no_more_turns()
    call.expect.next_turn()
    with pytest.raises(AssertionError, match=r"expected caller turn 3; the call had 2"):
        call.expect.next_turn()
    with pytest.raises(AssertionError, match=r"expected a turn where the agent said 'nine to five'"):
        call.expect.contains_turn(agent="nine to five")
    with pytest.raises(AssertionError, match=r"'action' event: expected \{'result': 'refused'\}, got"):
        call.expect.only_event("action").has(result="refused")
    with pytest.raises(AssertionError, match=r"expected exactly one 'transfer' event; the call had 0"):
        call.expect.only_event("transfer")
    with pytest.raises(AssertionError, match=r"turn 2: expected interrupted=False"):
        call.expect.contains_turn(caller="goodbye").was_interrupted(False)


def test_the_reader_reads_a_simulated_calls_report() -> None:
    turns = [TurnRecord(1, caller_text="What are your hours?", agent_text="Nine to five.")]
    report = CallReport("a", "in.wav", "out.wav", True, 5.0, 0.0, "ended", TurnRecord(0, agent_text="Hello."), turns)
    for raw in (report, report.as_dict()):
        call = read_call(raw)
        call.expect.greeting().agent_replied("hello")
        call.expect.next_turn().caller_said("hours").agent_replied("nine to five")
        call.expect.no_more_turns()
    with pytest.raises(AssertionError, match=r"expected the agent to reply"):
        read_call(
            {"turns": [{"turn": 1, "caller_text": "hello?", "agent_text": ""}]}
        ).expect.next_turn().agent_replied()


class Echo(Processor):
    """Answers each LLMText downstream with a Transcript upstream; fails on "boom"."""

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMText):
            await asyncio.sleep(0.01)  # a data frame's work, on the processor's own task
            if frame.text == "boom":
                raise RuntimeError("kaput")
            await self.push(Transcript(text=frame.text), Direction.UPSTREAM)
        await self.push(frame, direction)


async def test_frames_come_out_at_both_ends() -> None:
    ran = await run_frames(Echo(), [LLMText(text="a"), Upstream(AgentSpoke(turn_id=3)), Wait(0.01), LLMText(text="b")])
    assert [f.text for f in ran.of(LLMText)] == ["a", "b"]  # the queued data frames were all handled before the end
    assert [type(f) for f in ran.up] == [AgentSpoke, Transcript, Transcript]  # a system frame overtakes queued work
    assert [f.text for f in ran.of(Transcript, Direction.UPSTREAM)] == ["a", "b"]
    assert not any(isinstance(f, StartFrame | EndFrame) for f in ran.down + ran.up)
    assert ran.end is not None and ran.end.reason == "ended" and ran.errors == []


async def test_errors_and_a_cancelled_end_are_reported() -> None:
    ran = await run_frames([Echo(), Echo()], [LLMText(text="boom")], end=None)
    assert ran.end is not None and ran.end.reason == "cancelled"
    assert [type(f) for f in ran.up] == [ErrorFrame] and "kaput" in ran.errors[0].message

"""The responder's tool steps, through the real responder in a text call: results reach the reply and the record,
slow tools get a filler, failures a spoken recovery, loops a bound, and a discarded reply's irreversible call is
never carried out while a read tool talked over still lands in the next turn's history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.agent.context import Conversation
from parley.agent.document import parse_agent
from parley.calls.session import Services, build_responder
from parley.pipeline.clock import FastClock
from parley.pipeline.frames import EndOfTurn, Transcript, TurnResumed
from parley.pipeline.pipeline import Pipeline, PipelineRunner
from parley.services.llm.base import registry as llm_registry
from parley.testing.text_call import MindOptions, TextCall, TextPlayout
from parley.tools.base import ToolContext
from parley.tools.python_tool import function_tool
from parley.tools.toolbox import Toolbox

BOOKED: list[dict[str, Any]] = []


@function_tool(side_effect="irreversible")
async def book(day: str, context: ToolContext) -> dict[str, Any]:
    """Book an appointment on a day."""
    BOOKED.append({"day": day, "caller": context.variables.get("caller")})
    return {"day": day, "time": "10:00"}


@function_tool(deadline_s=2)
async def slow_hours(day: str) -> dict[str, str]:
    """Opening hours, from a slow system."""
    await asyncio.sleep(1.0)
    return {"hours": "8 to 6"}


@function_tool(deadline_s=0.3)
async def hangs(day: str) -> dict[str, str]:
    """A system that never answers."""
    await asyncio.sleep(30)
    return {}


def _agent(rules: list[dict[str, Any]], **tool_use: Any) -> Any:
    return parse_agent(
        {
            "name": "tools",
            "system_prompt": "You book appointments.",
            "llm": {"provider": "canned", "options": {"rules": rules}},
            "tool_use": tool_use,
        }
    )


async def _services(agent: Any, *tools: Any) -> Services:
    llm = llm_registry.create(agent.llm.provider, agent.llm.options)
    box = await Toolbox.open([], None, extra=tools)  # type: ignore[arg-type]
    return Services(vad=None, stt=None, llm=llm, tts=None, tools=box)  # type: ignore[arg-type]


async def _talk(agent: Any, services: Services, lines: list[str]) -> Any:
    call = TextCall(agent, services, MindOptions(variables={"caller": "+15550100"}))
    await call.start()
    for line in lines:
        await call.say(line)
    return await call.close()


def call_conversation(agent: Any) -> Conversation:
    return Conversation(agent.system_prompt, agent.max_history_turns, agent.greeting)


BOOK_RULE = {
    "match": ["book"],
    "reply": "Let me book that.",
    "tool": "book",
    "arguments": {"day": "Monday"},
    "after_tool": "You're booked on {day} at {time}.",
}


async def test_a_tool_result_reaches_the_reply_the_record_and_the_variables() -> None:
    BOOKED.clear()
    agent = _agent([BOOK_RULE], filler_delay_ms=5000)
    result = await _talk(agent, await _services(agent, book), ["Please book me in"])
    turn = result.turns[0]
    assert turn.reply == "Let me book that. You're booked on Monday at 10:00."
    assert BOOKED == [{"day": "Monday", "caller": "+15550100"}]
    (event,) = [e for e in turn.events if e["type"] == "tool"]
    assert event["tool"] == "book" and event["ok"] and event["result"] == {"day": "Monday", "time": "10:00"}
    assert event["side_effect"] == "irreversible" and event["arguments"] == {"day": "Monday"}
    result.expect.next_turn().called_tool("book", day="Monday").replied(contains="10:00")


async def test_a_slow_tool_gets_a_filler_line_and_then_its_answer() -> None:
    rule = {"match": ["hours"], "tool": "slow_hours", "arguments": {"day": "Monday"}, "after_tool": "We open {hours}."}
    agent = _agent([rule], filler_delay_ms=300, filler_line="One moment, let me check.")
    result = await _talk(agent, await _services(agent, slow_hours), ["What are your hours"])
    assert result.turns[0].reply == "One moment, let me check. We open 8 to 6."


async def test_a_fast_tool_gets_no_filler() -> None:
    BOOKED.clear()
    agent = _agent([BOOK_RULE], filler_delay_ms=700)
    result = await _talk(agent, await _services(agent, book), ["book it"])
    assert "moment" not in result.turns[0].reply


async def test_a_tool_that_hangs_is_cut_at_its_deadline_and_the_caller_hears_the_recovery() -> None:
    rule = {"match": ["hours"], "tool": "hangs", "arguments": {"day": "x"}, "after_tool": "never"}
    agent = _agent([rule], filler_delay_ms=5000, recovery_line="Sorry, I couldn't check that just now.")
    result = await _talk(agent, await _services(agent, hangs), ["hours please", "thanks"])
    first = result.turns[0]
    assert first.reply == "Sorry, I couldn't check that just now."
    assert [e["error"] for e in first.events if e["type"] == "tool"] == ["timeout"]
    assert result.turns[1].reply == "I see."  # the call goes on


@pytest.mark.parametrize(
    ("arguments", "error"), [({"day": 5}, "bad-arguments"), ({}, "bad-arguments")], ids=["wrong-type", "missing"]
)
async def test_arguments_that_fail_the_schema_are_not_run(arguments: dict[str, Any], error: str) -> None:
    BOOKED.clear()
    rule = {**BOOK_RULE, "arguments": arguments}
    agent = _agent([rule])
    result = await _talk(agent, await _services(agent, book), ["book"])
    assert BOOKED == []
    assert [e["error"] for e in result.turns[0].events if e["type"] == "tool"] == [error]
    assert result.turns[0].reply.endswith("Sorry, I couldn't check that just now.")


async def test_an_unknown_tool_is_an_event_and_a_recovery() -> None:
    rule = {"match": ["x"], "tool": "nonexistent", "reply": "Checking."}
    agent = _agent([rule])
    result = await _talk(agent, await _services(agent, book), ["x"])
    assert [e["error"] for e in result.turns[0].events if e["type"] == "tool"] == ["unknown-tool"]


async def test_a_model_that_keeps_calling_tools_is_bounded() -> None:
    rule = {"match": ["loop"], "tool": "slow_hours", "arguments": {"day": "x"}, "after_tool": ""}
    agent = _agent([rule], max_tool_steps=2, filler_delay_ms=5000)
    services = await _services(agent, slow_hours)
    services.llm.after_tool = lambda messages: None  # type: ignore[attr-defined]  # always calls again
    result = await _talk(agent, services, ["loop"])
    assert len([e for e in result.turns[0].events if e["type"] == "tool"]) == 2
    assert result.turns[0].reply.endswith("Sorry, I couldn't check that just now.")


async def test_tool_results_are_in_the_next_turns_history() -> None:
    BOOKED.clear()
    agent = _agent([BOOK_RULE])
    services = await _services(agent, book)
    seen: list[list[dict[str, Any]]] = []
    inner = services.llm.stream

    def spy(messages: list[Any], tools: Any = ()) -> Any:
        seen.append([dict(m) for m in messages])
        return inner(messages, tools)

    services.llm.stream = spy  # type: ignore[method-assign]
    await _talk(agent, services, ["book", "thanks"])
    last = seen[-1]
    roles = [m["role"] for m in last]
    assert roles[-4:] == ["assistant", "tool", "assistant", "user"], roles
    assert last[-4]["tool_calls"][0]["function"]["name"] == "book"
    assert '"time": "10:00"' in last[-3]["content"]


async def test_an_irreversible_call_of_a_discarded_speculative_reply_is_never_carried_out() -> None:
    """The caller pauses, the speculative reply asks to book, the caller talks on (TurnResumed): no booking."""
    BOOKED.clear()
    agent = _agent([BOOK_RULE])
    services = await _services(agent, book)
    playout = TextPlayout()
    responder = build_responder(agent, services, call_conversation(agent))
    pipeline = Pipeline([responder, playout])
    runner = PipelineRunner(pipeline, FastClock())
    task = asyncio.create_task(runner.run())
    await runner.wait_started()
    await pipeline.queue(Transcript(turn_id=1, text="book", t=0.0))
    await asyncio.sleep(0.2)  # the reply has asked for the tool; the turn is not confirmed
    assert BOOKED == []
    await pipeline.queue(TurnResumed(turn_id=1, t=0.1))
    await pipeline.queue(Transcript(turn_id=2, text="no wait, something else", t=0.5))
    await pipeline.queue(EndOfTurn(turn_id=2, t=0.6))
    await asyncio.sleep(0.2)
    await pipeline.queue(EndOfTurn(turn_id=1, t=0.7))  # even a late confirmation of the void turn does nothing
    await asyncio.sleep(0.2)
    assert BOOKED == []
    runner.cancel()
    await asyncio.gather(task, return_exceptions=True)

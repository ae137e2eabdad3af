"""The model-free canned LLM, and the agent document's ``actions`` section it is usually paired with."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from parley.agent.document import AgentDocumentError, parse_agent
from parley.services.llm.base import Message, ToolCall, registry
from parley.services.llm.canned import CannedLLM

RULES: list[dict[str, Any]] = [
    {"match": ["goodbye", "bye"], "reply": "Goodbye, have a nice day.", "action": "hang_up", "reason": "done"},
    {"match": ["human", "a person"], "reply": "Let me put you through.", "action": "transfer", "target": "sales"},
    {"match": r"pressed (\d ?)+ on the keypad", "reply": "Thanks for the code."},
]


def canned(**options: Any) -> CannedLLM:
    llm = registry.create("canned", {"rules": RULES, **options})
    assert isinstance(llm, CannedLLM)
    return llm


def said(text: str) -> list[Message]:
    return [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": "goodbye"},  # an earlier turn: only the last user message counts
        {"role": "assistant", "content": "Really?"},
        {"role": "user", "content": text},
    ]


async def collect(llm: CannedLLM, text: str) -> list[str | ToolCall]:
    return [item async for item in llm.stream(said(text))]


async def test_first_matching_rule_streams_its_reply_then_its_action() -> None:
    items = await collect(canned(words_per_piece=2), "OK then, bye!")
    assert items == ["Goodbye, have", " a nice", " day.", ToolCall("hang_up", {"reason": "done"})]
    items = await collect(canned(), "Can I speak to a person please")
    assert "".join(i for i in items if isinstance(i, str)) == "Let me put you through."
    assert items[-1] == ToolCall("transfer", {"target": "sales"})


async def test_keywords_match_whole_words_in_any_case_and_regexes_search() -> None:
    llm = canned()
    assert llm.answer("BYE now")[0] == "Goodbye, have a nice day."
    assert llm.answer("maybe later")[0] == "I see."  # "bye" inside "maybe" is not the word
    assert llm.answer("(the caller pressed 1 2 3 on the keypad)") == ("Thanks for the code.", None)
    assert await collect(canned(default="Sorry?"), "what?") == ["Sorry?"]
    assert await collect(canned(default=""), "what?") == []


async def test_delay_comes_before_the_first_piece() -> None:
    llm = canned(delay_ms=150)
    start = time.perf_counter()
    stream = llm.stream(said("bye"))
    assert await anext(stream) == "Goodbye, have a"
    assert time.perf_counter() - start >= 0.14
    await stream.aclose()


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError, match="regular expression"):
        registry.options("canned", {"rules": [{"match": "(", "reply": "x"}]})
    with pytest.raises(ValidationError, match="non-blank"):
        registry.options("canned", {"rules": [{"match": [], "reply": "x"}]})
    with pytest.raises(ValidationError, match="hang_up"):
        registry.options("canned", {"rules": [{"match": ["x"], "action": "dance"}]})
    with pytest.raises(ValidationError, match="words_per_piece"):
        registry.options("canned", {"words_per_piece": 0})
    with pytest.raises(ValidationError, match="extra"):
        registry.options("canned", {"rulez": []})


# --- the agent document's actions ------------------------------------------------------

BASE: dict[str, Any] = {"name": "a", "system_prompt": "Be brief.", "llm": {"provider": "canned"}}
ACTIONS: dict[str, Any] = {
    "hang_up": True,
    "transfer_to": "+15550100",
    "transfer_targets": {"sales": "+15550101", "support": "sip:support@pbx.example.com"},
    "dtmf": {"0": {"action": "transfer", "target": "sales"}, "#": {"action": "hang_up"}, "9": {"action": "transfer"}},
}


def test_actions_default_to_none_allowed() -> None:
    actions = parse_agent(BASE).actions
    assert actions.tools() == [] and not actions.dtmf
    assert actions.resolve(ToolCall("hang_up"))[3] == "hang_up is not enabled for this agent"
    assert actions.resolve(ToolCall("transfer", {"target": "+1555"}))[3] == "transfer is not enabled for this agent"


def test_tools_tell_the_llm_what_it_may_do() -> None:
    actions = parse_agent({**BASE, "actions": ACTIONS}).actions
    hang_up, transfer = actions.tools()
    assert hang_up.name == "hang_up" and "reason" in hang_up.parameters["properties"]
    assert transfer.name == "transfer" and "sales, support" in transfer.description
    assert transfer.parameters["properties"]["target"]["enum"] == ["sales", "support"]
    assert "required" not in transfer.parameters  # transfer_to is the default
    only_named = parse_agent({**BASE, "actions": {"transfer_targets": {"sales": "+1555"}}}).actions
    assert [t.name for t in only_named.tools()] == ["transfer"]
    assert only_named.tools()[0].parameters["required"] == ["target"]


def test_tool_calls_are_resolved_against_the_document() -> None:
    actions = parse_agent({**BASE, "actions": ACTIONS}).actions
    assert actions.resolve(ToolCall("hang_up", {"reason": "bye"})) == ("hang_up", "", "bye", "")
    assert actions.resolve(ToolCall("transfer", {"target": "support"}))[:2] == (
        "transfer",
        "sip:support@pbx.example.com",
    )
    assert actions.resolve(ToolCall("transfer", {}))[1:] == ("+15550100", "", "")
    assert actions.resolve(ToolCall("transfer", {"target": "+15550101"}))[3] == ""
    assert "not an allowed transfer target" in actions.resolve(ToolCall("transfer", {"target": "+1900666"}))[3]
    assert "unknown action" in actions.resolve(ToolCall("launch_rockets"))[3]
    assert actions.keypad("0") == ("transfer", "+15550101", "keypad 0")
    assert actions.keypad("9") == ("transfer", "+15550100", "keypad 9")
    assert actions.keypad("#") == ("hang_up", "", "keypad #")
    assert actions.keypad("1") is None


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ({"dtmf": {"E": {"action": "hang_up"}}}, "actions.dtmf: .*'E' is not a keypad digit"),
        ({"dtmf": {"12": {"action": "hang_up"}}}, "'12' is not a keypad digit"),
        ({"dtmf": {"1": {"action": "dance"}}}, "actions.dtmf.1.action"),
        ({"dtmf": {"1": {"action": "transfer"}}}, "dtmf '1': a transfer needs a target"),
        ({"transfer_to": ""}, "actions.transfer_to: .*phone number or SIP URI"),
        ({"transfer_to": "+1 555"}, "actions.transfer_to"),
        ({"transfer_targets": {"sales": ""}}, "actions.transfer_targets.sales"),
        ({"transfer_targets": {" ": "+1555"}}, "names must not be blank"),
        ({"hang_up": "sometimes"}, "actions.hang_up"),
        ({"hangup": True}, "actions.hangup"),
        ({"keypad_timeout_secs": 0}, "actions.keypad_timeout_secs"),
    ],
)
def test_bad_actions_are_named(actions: dict[str, Any], message: str) -> None:
    with pytest.raises(AgentDocumentError, match=message):
        parse_agent({**BASE, "actions": actions})

"""The knowledge base inside calls: facts reach the prompt within a budget, fail-open, cited on the turn.

The knowledge store here is a small real :class:`~parley.knowledge.types.KnowledgeSearch`: it keyword-matches
fixed chunks (with a configurable delay or failure), so what is tested is the call side: speculative retrieval on
the transcript, its budget, its events and citations, a flow node's collections, the ``search_knowledge`` tool
and the document's checks, in text calls through the real responder. The stored turn's citations are
``test_knowledge_call_record``'s.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

from parley.agent.document import AgentDocument, AgentDocumentError, parse_agent
from parley.calls.knowledge import CallKnowledge, call_knowledge
from parley.calls.session import Services
from parley.knowledge.types import KnowledgeUnavailable
from parley.pipeline.frames import EndOfTurn, Stage, Transcript, TurnResumed
from parley.processors.knowledge_lookup import KnowledgeLookup
from parley.services.llm.base import Message, Tool, ToolCall
from parley.services.llm.canned import CannedLLM
from parley.testing.text_call import TextCall

from .support.knowledge_shelf import HOURS, INVOICE, PARKING, SOUPS, Shelf, clinic


class Listening(CannedLLM):
    """The canned LLM, keeping every prompt it was given."""

    def __init__(self, rules: list[dict[str, Any]] | None = None, default: str = "Let me see.") -> None:
        super().__init__(CannedLLM.Options.model_validate({"rules": rules or [], "default": default}))
        self.prompts: list[list[Message]] = []

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        self.prompts.append(list(messages))
        async for piece in super().stream(messages, tools):
            yield piece


def agent(knowledge: dict[str, Any] | None, **more: Any) -> AgentDocument:
    doc: dict[str, Any] = {"name": "clinic", "system_prompt": "You answer for the clinic.", **more}
    if knowledge is not None:
        doc["knowledge"] = knowledge
    return parse_agent(doc)


def services(llm: CannedLLM, shelf: Shelf | None) -> Services:
    knowledge = CallKnowledge(shelf) if shelf is not None else None
    return Services(vad=None, stt=None, llm=llm, tts=None, knowledge=knowledge)  # type: ignore[arg-type]


async def talk(doc: AgentDocument, svc: Services, lines: list[str]) -> TextCall:
    call = TextCall(doc, svc)
    await call.start()
    for line in lines:
        await call.say(line)
    await call.close()
    return call


def knowledge_events(call: TextCall, turn: int) -> list[dict[str, Any]]:
    record = call.log.turns.get(turn)
    return [e for e in record.events if e["type"] == "knowledge"] if record else []


def facts_in(prompt: list[Message]) -> str:
    """The knowledge message of a prompt ("" when there is none); it must sit right before the caller's words."""
    found = [i for i, m in enumerate(prompt) if m["role"] == "system" and "knowledge base" in m["content"]]
    if not found:
        return ""
    assert found == [len(prompt) - 2] and prompt[-1]["role"] == "user", prompt
    return str(prompt[found[0]]["content"])


async def test_facts_reach_the_llm_and_the_turn_keeps_their_citations() -> None:
    llm, shelf = Listening(default="On Saturday we are open from 9 am to noon."), clinic()
    call = await talk(agent({"collections": ["clinic"]}), services(llm, shelf), ["When are you open on Saturday?"])
    # the facts back the reply's claims (day, times): the grounding check lets it through
    assert call.result.turns[0].reply == "On Saturday we are open from 9 am to noon."

    facts = facts_in(llm.prompts[-1])
    assert HOURS in facts and "(hours.pdf)" in facts and facts.count("[1]") == 1
    assert "not instructions" in facts  # documents are data: the framing says so
    assert shelf.calls == [("When are you open on Saturday?", ["clinic"])]
    [event] = knowledge_events(call, 1)
    assert event["status"] == "ok" and event["collections"] == ["clinic"] and event["elapsed_ms"] >= 0
    [cited] = call.log.turns[1].citations
    assert cited["document"] == "hours.pdf" and cited["chunk"] == 0 and cited["chunk_id"] == "hours.pdf#0"
    assert cited == event["citations"][0] and 0 < cited["score"] <= 1
    assert call.log.turns[1].as_dict()["citations"] == [cited]


async def test_no_hits_is_an_empty_event_and_no_facts() -> None:
    llm = Listening()
    call = await talk(agent({"collections": ["clinic"]}), services(llm, clinic()), ["Tell me a joke"])
    assert facts_in(llm.prompts[-1]) == ""
    assert [e["status"] for e in knowledge_events(call, 1)] == ["empty"]
    assert call.log.turns[1].citations == []


async def test_the_prompt_takes_at_most_max_chars_of_retrieved_text() -> None:
    long_text = "Saturday " + "opening details " * 200
    shelf = Shelf({"clinic": [("long.md", long_text), ("hours.pdf", HOURS)]})
    llm = Listening()
    doc = agent({"collections": ["clinic"], "max_chars": 300})
    call = await talk(doc, services(llm, shelf), ["Saturday opening hours"])
    facts = facts_in(llm.prompts[-1])
    assert "[1]" in facts and len(facts) < 300 + 400  # the framing, then at most max_chars of passages
    assert [c["document"] for c in call.log.turns[1].citations] == ["long.md"]  # only what the prompt got


async def test_a_slow_search_does_not_hold_the_reply_past_its_budget() -> None:
    llm, shelf = Listening(default="Let me check that for you."), Shelf(clinic().chunks, delay=3.0)
    doc = agent({"collections": ["clinic"], "budget_ms": 100})
    call = TextCall(doc, services(llm, shelf))
    await call.start()
    heard_at = call.clock.now()
    turn = await call.say("When are you open on Saturday?")
    await call.close()

    assert turn.reply == "Let me check that for you."  # fail-open: the reply went on without facts
    assert facts_in(llm.prompts[-1]) == ""
    [event] = knowledge_events(call, 1)
    assert event["status"] == "timeout" and event["citations"] == [] and 90 <= event["elapsed_ms"] < 600
    waited = call.log.turns[1].times[Stage.LLM_FIRST_TOKEN] - heard_at  # on the call clock
    assert waited < 0.1 + 0.5, waited
    assert shelf.cancelled == 1  # the late search does not run on


@pytest.mark.parametrize("failure", [KnowledgeUnavailable("chroma is down"), RuntimeError("a bug")])
async def test_a_failed_search_is_an_error_event_and_the_reply_goes_on(failure: Exception) -> None:
    llm, shelf = Listening(default="Let me see."), Shelf(clinic().chunks, fail=failure)
    call = await talk(agent({"collections": ["clinic"]}), services(llm, shelf), ["When are you open?", "thanks"])
    assert [t.reply for t in call.result.turns] == ["Let me see.", "Let me see."]
    [event] = knowledge_events(call, 1)
    assert event["status"] == "error" and event["error"] == type(failure).__name__
    assert not call.result.errors and facts_in(llm.prompts[-1]) == ""


async def test_a_turn_whose_final_transcript_repeats_the_speculative_one_searches_once() -> None:
    llm, shelf = Listening(), Shelf(clinic().chunks, delay=0.02)
    call = TextCall(agent({"collections": ["clinic"]}), services(llm, shelf))
    await call.start()
    line = "Where is parking?"
    now = call.clock.now()
    await call.pipeline.queue(Transcript(turn_id=1, text=line, t=now))  # the speculative one, at the first pause
    await call.pipeline.queue(TurnResumed(turn_id=1, t=now))  # the caller went on...
    await call.pipeline.queue(Transcript(turn_id=1, text=line, t=now))  # ...and the words came out the same
    await call.pipeline.queue(EndOfTurn(turn_id=1, t=now))
    await asyncio.wait_for(call.playout.done(1).wait(), 30)
    await call.close()

    assert shelf.calls == [(line, ["clinic"])] and shelf.cancelled == 0
    assert PARKING in facts_in(llm.prompts[-1])
    assert [c["document"] for c in call.log.turns[1].citations] == ["visiting.md"]


async def test_a_changed_transcript_cancels_the_speculative_search() -> None:
    llm, shelf = Listening(), Shelf(clinic().chunks, delay=0.05)
    call = TextCall(agent({"collections": ["clinic"]}), services(llm, shelf))
    await call.start()
    now = call.clock.now()
    await call.pipeline.queue(Transcript(turn_id=1, text="Where do I", t=now))
    await call.pipeline.queue(Transcript(turn_id=1, text="Where do I find parking?", t=now))
    await call.pipeline.queue(EndOfTurn(turn_id=1, t=now))
    await asyncio.wait_for(call.playout.done(1).wait(), 30)
    await call.close()
    assert [q for q, _ in shelf.calls] == ["Where do I", "Where do I find parking?"] and shelf.cancelled == 1
    assert [e["status"] for e in knowledge_events(call, 1)] == ["ok"]


ALWAYS_QUIET = {"type": "always", "to": "quiet"}
FLOW = {
    "start": "front",
    "nodes": {
        "front": {
            "prompt": "Answer questions about the menu.",
            "knowledge": ["menu"],
            "edges": [
                {"type": "expression", "when": "find(text, ['invoice', 'billing']) != null", "to": "billing"},
                {"type": "expression", "when": "find(text, ['quiet']) != null", "to": "quiet"},
                {"type": "always", "to": "front"},
            ],
        },
        "billing": {"prompt": "Answer billing questions.", "knowledge": ["billing"], "edges": [ALWAYS_QUIET]},
        "quiet": {"prompt": "Just chat.", "knowledge": [], "edges": [ALWAYS_QUIET]},
    },
}


async def test_a_flow_node_searches_its_own_collections_and_none_where_it_names_none() -> None:
    llm, shelf = Listening(), clinic()
    doc = agent({"collections": ["clinic"]}, flow=FLOW)
    lines = ["Which soups are there today?", "A billing question: when are invoices sent?", "Which soups again?"]
    call = await talk(doc, services(llm, shelf), lines)

    assert SOUPS in facts_in(llm.prompts[0])
    [first] = knowledge_events(call, 1)
    assert first["collections"] == ["menu"] and first["status"] == "ok"
    # turn 2 was heard in "front" (its search started there) and routed to "billing": billing's collection is used
    assert shelf.calls[1:3] == [(lines[1], ["menu"]), (lines[1], ["billing"])]
    assert INVOICE in facts_in(llm.prompts[1])
    assert [c["collection"] for c in call.log.turns[2].citations] == ["billing"]
    # turn 3 was heard in "billing" and routed to "quiet", which names no collection: its search is dropped unused
    assert shelf.calls[3:] == [(lines[2], ["billing"])]
    assert knowledge_events(call, 3) == [] and facts_in(llm.prompts[2]) == ""
    assert call.log.turns[3].citations == []


SEARCH_RULE = {"match": ["park", "parking"], "tool": "search_knowledge", "arguments": {"query": "parking"},
               "after_tool": "Here is what I found."}  # fmt: skip


async def test_mode_tool_searches_only_when_the_model_calls_search_knowledge() -> None:
    llm, shelf = Listening([SEARCH_RULE], default="Hello there."), clinic()
    doc = agent({"collections": ["clinic"], "mode": "tool"}, tool_use={"filler_delay_ms": 5000})
    call = await talk(doc, services(llm, shelf), ["Good morning", "Where can I park?"])

    assert "search_knowledge" in [t.name for t in llm_offered(call)]
    assert shelf.calls == [("parking", ["clinic"])]  # no speculative search on either turn
    assert knowledge_events(call, 1) == knowledge_events(call, 2) == []
    [tool] = [e for e in call.log.turns[2].events if e["type"] == "tool"]
    assert tool["tool"] == "search_knowledge" and tool["ok"]
    assert PARKING in tool["result"]["results"][0]["text"]
    assert [c["document"] for c in tool["citations"]] == ["visiting.md"]
    assert call.log.turns[2].citations == tool["citations"]
    assert call.result.turns[1].reply == "Here is what I found."
    tool_message = next(m for m in llm.prompts[-1] if m["role"] == "tool")
    assert PARKING in tool_message["content"]  # the model read the passage


def llm_offered(call: TextCall) -> list[Tool]:
    responder = call.pipeline.processors[0]
    return list(responder._tools)  # type: ignore[attr-defined]


async def test_mode_both_retrieves_each_turn_and_offers_the_tool() -> None:
    llm, shelf = Listening([SEARCH_RULE]), clinic()
    doc = agent({"collections": ["clinic"], "mode": "both"}, tool_use={"filler_delay_ms": 5000})
    call = await talk(doc, services(llm, shelf), ["Is there parking?"])
    assert shelf.calls == [("Is there parking?", ["clinic"]), ("parking", ["clinic"])]
    assert [e["status"] for e in knowledge_events(call, 1)] == ["ok"]
    assert [c["document"] for c in call.log.turns[1].citations] == ["visiting.md"]  # one chunk, cited once


async def test_without_a_knowledge_base_the_call_goes_on_with_one_event() -> None:
    llm = Listening(default="Hello.")
    call = await talk(agent({"collections": ["clinic"], "mode": "both"}), services(llm, None), ["open?", "and?"])
    assert [t.reply for t in call.result.turns] == ["Hello.", "Hello."]
    events = [e for r in call.log.turns.values() for e in r.events if e["type"] == "knowledge"]
    assert events == [{"type": "knowledge", "turn": 0, "status": "unavailable"}]
    assert "search_knowledge" not in [t.name for t in llm_offered(call)]


async def test_the_lookup_alone_fails_open_within_its_budget() -> None:
    """The helper without a call: a search that never answers is cut at the budget."""
    from parley.agent.knowledge_settings import KnowledgeSettings
    from parley.pipeline.clock import RealClock

    shelf = Shelf(clinic().chunks, delay=30)
    lookup = KnowledgeLookup(shelf, KnowledgeSettings(collections=["clinic"], budget_ms=50))
    events: list[dict[str, Any]] = []

    async def emit(event: dict[str, Any]) -> None:
        events.append(event)

    clock = RealClock()
    lookup.start(1, "opening hours", ["clinic"], clock)
    assert await lookup.result(1, emit) == [] and events[0]["status"] == "timeout"
    assert 45 <= events[0]["elapsed_ms"] < 1000
    lookup.close()


@pytest.mark.parametrize(
    ("knowledge", "where"),
    [
        ({"collections": []}, "knowledge.collections"),
        ({"collections": [f"c{i}" for i in range(9)]}, "knowledge.collections"),
        ({"collections": ["x" * 101]}, "knowledge.collections.0"),
        ({"collections": [""]}, "knowledge.collections.0"),
        ({"collections": ["a\nb"]}, "knowledge.collections.0"),
        ({"collections": ["a"], "mode": "always"}, "knowledge.mode"),
        ({"collections": ["a"], "top_k": 11}, "knowledge.top_k"),
        ({"collections": ["a"], "min_score": 1.5}, "knowledge.min_score"),
        ({"collections": ["a"], "budget_ms": 5}, "knowledge.budget_ms"),
        ({"collections": ["a"], "budget_ms": 5000}, "knowledge.budget_ms"),
        ({"collections": ["a"], "colections": ["b"]}, "knowledge.colections"),
    ],
)
def test_the_document_checks_its_knowledge_block(knowledge: dict[str, Any], where: str) -> None:
    with pytest.raises(AgentDocumentError) as err:
        agent(knowledge)
    assert f"  {where}:" in str(err.value), str(err.value)


def test_the_document_checks_the_tool_name_and_the_nodes_collections() -> None:
    tool = {"type": "python", "name": "search_knowledge", "function": "tests.support.clinic_tools:book_appointment"}
    with pytest.raises(AgentDocumentError, match="knowledge base's tool"):
        agent({"collections": ["a"], "mode": "tool"}, tools=[tool])
    node_flow = {"start": "a", "nodes": {"a": {"prompt": "x", "tools": ["search_knowledge"], "terminal": True}}}
    agent({"collections": ["a"], "mode": "both"}, flow=node_flow)  # the tool may be named in a node's tools
    with pytest.raises(AgentDocumentError, match="unknown tools"):
        agent({"collections": ["a"]}, flow=node_flow)  # mode auto offers no tool
    many = {"start": "a", "nodes": {"a": {"prompt": "x", "knowledge": [f"c{i}" for i in range(9)], "terminal": True}}}
    with pytest.raises(AgentDocumentError, match=r"flow\.nodes\.a\.knowledge"):
        agent({"collections": ["a"]}, flow=many)
    doc = agent({"collections": [" clinic ", "clinic", "menu"]})
    assert doc.knowledge is not None and doc.knowledge.collections == ["clinic", "menu"]
    assert doc.knowledge.top_k == 3 and doc.knowledge.budget_ms == 150 and doc.knowledge.mode == "auto"


async def test_a_small_collection_is_in_the_system_prompt_and_turns_only_record_citations() -> None:
    """Given whole at set-up (``inline_chars``), the facts sit in the prompt's cached prefix: no turn re-reads
    them, and each turn's search, not waited for, still cites what it found."""
    llm, shelf = Listening(default="On Saturday we are open from 9 am to noon."), Shelf(clinic().chunks, whole=True)
    doc = agent({"collections": ["clinic"]})
    known = await call_knowledge(doc, uuid.uuid4(), _Opened(shelf))  # type: ignore[arg-type]
    assert known is not None and [h.document for h in known.inline or []] == ["hours.pdf", "visiting.md"]
    svc = Services(vad=None, stt=None, llm=llm, tts=None, knowledge=known)  # type: ignore[arg-type]
    call = await talk(doc, svc, ["When are you open on Saturday?"])
    assert call.result.turns[0].reply == "On Saturday we are open from 9 am to noon."
    prompt = llm.prompts[-1]
    assert HOURS in prompt[0]["content"] and PARKING in prompt[0]["content"]  # the system prompt holds them
    assert prompt[0]["content"].startswith("You answer for the clinic.") and "not instructions" in prompt[0]["content"]
    assert not [m for m in prompt[1:] if "knowledge base" in m["content"]]  # and no turn adds them again
    [event] = knowledge_events(call, 1)
    assert event["inline"] is True and event["status"] == "ok"
    assert [c["chunk_id"] for c in call.log.turns[1].citations] == ["hours.pdf#0"]


async def test_a_collection_too_big_or_mode_tool_or_inline_off_is_retrieved_per_turn() -> None:
    shelf = Shelf(clinic().chunks, whole=True)
    tenant = uuid.uuid4()
    for knowledge in ({"collections": ["clinic"], "inline_chars": 100}, {"collections": ["clinic"], "mode": "tool"},
                      {"collections": ["clinic"], "inline_chars": 0}):  # fmt: skip
        known = await call_knowledge(agent(knowledge), tenant, _Opened(shelf))  # type: ignore[arg-type]
        assert known is not None and known.inline is None, knowledge


class _Opened:
    """A knowledge base that hands every tenant the same shelf (what :func:`call_knowledge` opens)."""

    def __init__(self, shelf: Shelf) -> None:
        self.shelf = shelf

    def for_tenant(self, tenant_id: object) -> Shelf:
        return self.shelf

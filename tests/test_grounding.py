"""Grounded replies: a claim (number, day, name) the agent's prompt does not back is never spoken.

The replies are the ones small embedded models really gave in bench/answers.py ("A filling costs 60 dollars"
when 60 is the cleaning's price, "Dr. John Doe", "open on Sundays"), streamed through the canned provider
piece by piece as a model streams them.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from parley.agent.claims import Knowledge, claims_of
from parley.agent.document import AgentDocument
from parley.agent.grounding import ClaimGuard, GroundedLLM, GroundingSettings, grounded, hinted
from parley.services.llm.base import LLM, Message, registry

PROMPT = """You are the receptionist of Bright Smile Dental, speaking to a caller on the phone.
Facts you know:
- Opening hours: Monday to Friday, 8 am to 6 pm; Saturday 9 am to 1 pm; closed on Sunday.
- Address: 42 Harbor Street, Springfield, next to the central library.
- Services: check-ups, cleaning, fillings, whitening and emergency care.
- A check-up costs 80 dollars; cleaning costs 60 dollars.
- Parking is free behind the building.
"""
FALLBACK = "I'm not sure about that. I'll ask a colleague to call you back."

BACKED = [
    ("How much is a check-up?", "A check-up costs 80 dollars."),
    ("How much is a check-up?", "It's $80."),
    ("What does a cleaning cost?", "A cleaning is sixty dollars, and a check-up is 80."),
    ("Both together?", "A check-up and a cleaning would be 140 dollars in total."),
    ("Are you open on Sundays?", "No, we're closed on Sundays."),
    ("Are you open on Sundays?", "Sorry, we aren't open on Sunday."),
    ("Are you open on Saturday?", "Yes, we're open on Saturday from 9 am to 1 pm."),
    ("Until when on Saturday?", "On Saturday we close at 1 pm."),
    ("What time do you open on Tuesday?", "We're open Tuesday from 8:00 to 18:00."),
    ("Where are you?", "We're at 42 Harbor Street, Springfield, next to the central library."),
    ("Can I get a check-up next Tuesday?", "Sure, I can book your check-up on Tuesday."),
    ("My number is 555 0134.", "So that is 555 0134, thank you."),
    ("Is there parking?", "Yes, parking is free behind the building."),
    ("When are you open on Saturday?", "Bright Smile Dental's hours on Saturday are 9 am to 1 pm."),  # a possessive
    ("Do you do teeth whitening?", "Yes, we offer teeth whitening."),
    ("Is your office near anything I'd know?", "Yes, we're next to the central library."),
    ("Do you do braces for kids?", "I'm not sure, I'll ask a colleague."),
    ("My tooth hurts, can you help?", "I'm sorry to hear that. We offer emergency care, can you come in today?"),
]
NOT_BACKED = [
    ("How much is a filling?", "A filling costs 60 dollars."),  # a known number moved onto another known thing
    ("Are you open on Sundays?", "Yes, we are open on Sundays."),  # the prompt says the opposite
    ("Are you open on Sundays?", "Yes, Bright Smile Dental is open on Sundays."),
    ("How late on Fridays?", "We're open until 1 pm on Fridays."),
    ("What's the name of the dentist?", "The name of the dentist is Dr. John Doe."),  # a name from nowhere
    ("What's your address?", "We're at 24 Harbor Street."),
    ("Do you take Delta Dental insurance?", "Yes, Delta Dental insurance is available."),  # a "yes" about the unknown
    ("Do you do braces for kids?", "Yes, we do braces for kids."),
    ("Are you open on Christmas Day?", "Yes, Bright Smile Dental is open on Christmas Day."),
]


def _guarded(question: str, reply: str) -> tuple[str, ClaimGuard]:
    guard = ClaimGuard(Knowledge.of([PROMPT], [question]), question, FALLBACK)
    out = "".join(guard.feed(token) for token in re.findall(r"\s*\S+", reply))
    return out + guard.finish(), guard


@pytest.mark.parametrize(("question", "reply"), BACKED)
def test_a_backed_reply_is_spoken_unchanged(question: str, reply: str) -> None:
    out, guard = _guarded(question, reply)
    assert guard.failed is None and out == reply


@pytest.mark.parametrize(("question", "reply"), NOT_BACKED)
def test_an_unbacked_claim_is_replaced_by_the_fallback(question: str, reply: str) -> None:
    out, guard = _guarded(question, reply)
    assert guard.failed is not None
    said = out.split("Sorry, I misspoke.")[0] if "misspoke" in out else out.split(FALLBACK)[0]
    assert not claims_of(said).facts - claims_of(PROMPT).facts, f"a claim escaped: {said!r}"
    if "Sunday" in question:  # the prompt says the opposite: the agent says what the prompt says
        assert out.endswith("Sorry, I misspoke. Opening hours: closed on Sunday.")
    else:
        assert out.endswith(FALLBACK)


def test_text_streams_at_once_while_its_claims_are_backed() -> None:
    guard = ClaimGuard(Knowledge.of([PROMPT]), "How much?", FALLBACK)
    assert guard.feed("Sure") == "Sure"  # cannot grow into a claim word: out at once
    assert guard.feed(" thing,") == " thing,"
    assert guard.feed(" a check-up") == " a check-up"
    assert guard.feed(" costs 8") == " costs "  # "8" may still grow into "80" (or "85"): it waits
    assert guard.feed("0 dollars.") == "80 "  # a check-up does cost 80
    assert guard.feed(" Anything") == "dollars. Anything"
    assert guard.finish() == ""


def test_a_contradicted_claim_is_corrected_at_once_not_at_the_end_of_its_part() -> None:
    guard = ClaimGuard(Knowledge.of([PROMPT]), "Sunday?", FALLBACK)
    out = guard.feed("Yes, we are open on Sunday") + guard.feed(" from")
    assert out == "Yes, we are open on Sorry, I misspoke. Opening hours: closed on Sunday." and guard.failed
    assert guard.feed(" 9 am to 5 pm, and we would love to see you.") == "" and guard.finish() == ""


def test_an_unbacked_number_is_never_released() -> None:
    guard = ClaimGuard(Knowledge.of([PROMPT]), "How much is a filling?", FALLBACK)
    out = guard.feed("A filling costs 6") + guard.feed("0") + guard.feed(" dollars") + guard.feed(", so")
    assert out == "A filling costs " + FALLBACK and guard.failed


def test_a_word_that_may_grow_into_a_day_is_held_one_piece() -> None:
    guard = ClaimGuard(Knowledge.of([PROMPT]), "Sunday?", FALLBACK)
    assert guard.feed("We are open on Sun") == "We are open on "
    assert guard.feed("days.") == ""
    assert guard.finish() == "Sorry, I misspoke. Opening hours: closed on Sunday."


def test_hints_put_the_relevant_fact_after_the_question_and_keep_the_prefix() -> None:
    messages: list[Message] = [
        {"role": "system", "content": PROMPT},
        {"role": "assistant", "content": "Hello, Bright Smile Dental."},
        {"role": "user", "content": "Can I come in on Sunday?"},
    ]
    out = hinted(messages, Knowledge.of([PROMPT]))
    assert out[:2] == messages[:2]
    assert out[-1]["content"].startswith("Can I come in on Sunday?\n(Facts: Opening hours: closed on Sunday")
    unknown = [messages[0], {"role": "user", "content": "Do you take Delta insurance?"}]
    assert hinted(unknown, Knowledge.of([PROMPT])) == unknown  # nothing relevant: no tokens added


@pytest.mark.parametrize(
    ("question", "facts"),
    [
        ("How much for a check-up and a cleaning?", ["A check-up costs 80 dollars", "cleaning costs 60 dollars"]),
        ("How late are you open on Fridays?", ["Opening hours: Monday to Friday, 8 am to 6 pm"]),
        ("And on Saturday?", ["Opening hours: Saturday 9 am to 1 pm"]),
        ("Is there somewhere to park?", ["Parking is free behind the building"]),
    ],
)
def test_the_relevant_facts_are_the_ones_the_answer_needs(question: str, facts: list[str]) -> None:
    assert Knowledge.of([PROMPT]).relevant(question) == facts


def _canned(reply: str) -> LLM:
    return registry.create("canned", {"default": reply, "words_per_piece": 1})


async def _collect(llm: LLM, question: str) -> list[object]:
    messages: list[Message] = [{"role": "system", "content": PROMPT}, {"role": "user", "content": question}]
    return [piece async for piece in llm.stream(messages)]


def test_the_wrapped_provider_stops_at_an_unbacked_claim_and_acts_no_further() -> None:
    inner = registry.create(
        "canned", {"rules": [{"match": ["filling"], "reply": "A filling costs 60 dollars. Bye!", "action": "hang_up"}]}
    )
    llm = GroundedLLM(inner, GroundingSettings(enabled=True))
    pieces = asyncio.run(_collect(llm, "How much is a filling?"))
    assert all(isinstance(p, str) for p in pieces), "no action after a reply that was cut for an unbacked claim"
    text = "".join(str(p) for p in pieces)
    assert "60" not in text and text.endswith(GroundingSettings().fallback)


def test_a_backed_reply_and_its_action_pass_through() -> None:
    inner = registry.create(
        "canned", {"rules": [{"match": ["check-up"], "reply": "A check-up is 80 dollars.", "action": "hang_up"}]}
    )
    pieces = asyncio.run(_collect(GroundedLLM(inner, GroundingSettings(enabled=True)), "How much is a check-up?"))
    assert "".join(p for p in pieces if isinstance(p, str)) == "A check-up is 80 dollars."
    assert not isinstance(pieces[-1], str) and pieces[-1].name == "hang_up"


def test_grounding_is_on_for_the_embedded_model_and_set_by_the_document() -> None:
    doc = AgentDocument.model_validate({"name": "a", "system_prompt": PROMPT})
    assert doc.grounding.active("llama") and not doc.grounding.active("openai")
    off = AgentDocument.model_validate({"name": "a", "system_prompt": PROMPT, "grounding": {"enabled": False}})
    canned = _canned("Hi.")
    assert grounded(canned, off.grounding, "llama") is canned
    assert isinstance(grounded(canned, doc.grounding, "llama"), GroundedLLM)
    with pytest.raises(ValueError, match="grounding"):
        AgentDocument.model_validate({"name": "a", "system_prompt": PROMPT, "grounding": {"enabeld": True}})

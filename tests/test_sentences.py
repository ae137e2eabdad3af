"""Sentence chunking of streamed LLM text."""

from __future__ import annotations

import pytest

from parley.agent.context import Conversation, heard_part
from parley.agent.sentences import SentenceBuffer, clean_for_speech


def feed_tokens(text: str, buf: SentenceBuffer | None = None) -> list[str]:
    buf = buf or SentenceBuffer()
    out: list[str] = []
    # tokens as an LLM streams them: a leading space on each word
    for i, word in enumerate(text.split(" ")):
        out += buf.feed(word if i == 0 else " " + word)
    if rest := buf.flush():
        out.append(rest)
    return out


def test_sentences_come_out_as_soon_as_they_end() -> None:
    buf = SentenceBuffer(first_clause_words=0)
    assert buf.feed("We open at nine") == []
    assert buf.feed(".") == []  # the end is only sure once what follows is a space
    assert buf.feed(" Parking") == ["We open at nine."]
    assert buf.feed(" is free") == []
    assert buf.flush() == "Parking is free"


def test_first_piece_may_be_a_clause_later_pieces_are_sentences() -> None:
    pieces = feed_tokens("Sure thing, we are open from nine to five, Monday to Friday. After that, we close.")
    assert pieces == ["Sure thing, we are open from nine to five,", "Monday to Friday.", "After that, we close."]


def test_abbreviations_and_decimals_do_not_split() -> None:
    pieces = feed_tokens("Dr. Smith sees patients at 9.30 a.m. every day. Call us e.g. tomorrow.")
    assert pieces[0].startswith("Dr. Smith sees patients at 9.30")
    assert all(not p.endswith("Dr.") for p in pieces)


def test_markdown_is_not_spoken() -> None:
    assert clean_for_speech("**Hours:**\n- Monday `9-5`\n# Note") == "Hours: Monday 9-5 Note"
    assert feed_tokens("Here:\n1. Cleaning\n2. Fillings") == ["Here:", "Cleaning", "Fillings"]


@pytest.mark.parametrize(
    "fraction,expected", [(0.0, ""), (0.5, "we are"), (0.99, "we are open"), (1.0, "we are open today")]
)
def test_heard_part_keeps_whole_words(fraction: float, expected: str) -> None:
    assert heard_part("we are open today", fraction) == expected


def test_conversation_keeps_prefix_stable_and_trims_old_turns() -> None:
    conv = Conversation("You are helpful.", max_history_turns=2, greeting="Hello!")
    for i in range(4):
        conv.add_turn(f"q{i}", f"a{i}")
    messages = conv.messages_for("q4")
    assert messages[0] == {"role": "system", "content": "You are helpful."}
    assert messages[1] == {"role": "assistant", "content": "Hello!"}
    assert messages[2] == {"role": "system", "content": "Earlier in this call the caller said: q0; q1"}
    assert [m["content"] for m in messages[3:]] == ["q2", "a2", "q3", "a3", "q4"]

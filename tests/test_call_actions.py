"""In-call actions on a real live call: the whole pipeline (Silero, Whisper, the canned LLM, espeak), SQLite, blobs.

Calls run on the fast clock: idle waits are skipped, model work takes its real time. The
caller's keypad presses are sent at call times; the call record is read back from the
database, as the API would show it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest_asyncio

from parley.api.talk_protocol import TalkControl

from .support.audio import espeak, silence
from .support.keyed_call import Record, Store, open_store, run_keyed_call

RATE = 16000
LONG = "Please hold on while I look that up for you, this will take a little moment, thank you for waiting."


def agent(rules: list[dict[str, Any]], actions: dict[str, Any], greeting: str = "") -> dict[str, Any]:
    return {
        "name": "actions test",
        "system_prompt": "A test line.",
        "greeting": greeting,
        "stt": {"provider": "whisper"},
        "tts": {"provider": "espeak", "fallback": None},
        "llm": {"provider": "canned", "options": {"rules": rules, "default": "Sorry?"}},
        "actions": actions,
    }


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path, "actions") as opened:
        yield opened


async def run_call(store: Store, doc: dict[str, Any], audio: np.ndarray, presses: list[tuple[float, str]]) -> Record:
    """One live call: ``audio`` (16 kHz) as the caller's line, keypad ``presses`` at call times."""
    return await run_keyed_call(store, doc, audio.astype("<i2").tobytes(), presses, control=TalkControl())


async def test_caller_says_goodbye_agent_says_goodbye_and_hangs_up(store: Store) -> None:
    doc = agent([{"match": ["goodbye", "bye"], "reply": "Goodbye, have a nice day.", "action": "hang_up"}],
                {"hang_up": True})  # fmt: skip
    audio = np.concatenate([silence(0.3), espeak("Goodbye!"), silence(15)])
    rec = await run_call(store, doc, audio, [])

    assert rec.reason == rec.end_reason == "agent-hangup"
    turn = rec.turns[1]
    assert "bye" in turn.caller_text.lower()
    assert turn.agent_text == "Goodbye, have a nice day." and not turn.interrupted  # heard to the end first
    [action] = rec.of("action")
    assert action["action"] == "hang_up" and action["turn"] == 1 and action["result"] == "done"
    # the reply (about 1.5 s of speech) played before the line dropped
    assert action["t"] >= turn.times["first_audio_out"] + 1.0
    assert not rec.of("interruption")


async def test_keypad_entries_are_turns_and_llm_actions_are_checked(store: Store) -> None:
    rules = [
        {"match": r"pressed 1 2 3 4 on", "reply": "Thank you, your code is correct."},
        {"match": r"pressed 5 on", "reply": "Let me put you through.", "action": "transfer", "target": "sales"},
        {"match": r"pressed 6 on", "reply": "Goodbye.", "action": "hang_up"},  # not allowed for this agent
    ]
    actions = {"transfer_targets": {"sales": "+15550101"}, "dtmf": {"0": {"action": "transfer", "target": "+15550100"}}}
    presses = [(0.5, "1"), (0.7, "2"), (0.9, "3"), (1.1, "4"), (6.0, "5"), (6.2, "#"), (10.0, "6"), (10.1, "#")]
    presses.append((13.0, "0"))
    rec = await run_call(store, agent(rules, actions), silence(15), presses)

    assert rec.reason == rec.end_reason == "caller-hangup"  # an unsupported transfer does not end the call
    assert [e["digit"] for e in rec.of("dtmf")] == [d for _, d in presses]
    texts = {n: (t.caller_text, t.agent_text) for n, t in rec.turns.items() if n > 0}
    assert texts == {
        1: ("(the caller pressed 1 2 3 4 on the keypad)", "Thank you, your code is correct."),
        2: ("(the caller pressed 5 on the keypad)", "Let me put you through."),
        3: ("(the caller pressed 6 on the keypad)", "Goodbye."),
    }
    # the entry ended 1.5 s after the last digit; '#' ended the others at once
    assert abs(rec.turns[1].times["end_of_turn"] - 2.6) < 0.2
    assert abs(rec.turns[2].times["end_of_turn"] - 6.2) < 0.2
    transfer, hang_up, keypad = rec.of("action")
    assert transfer["action"] == "transfer" and transfer["target"] == "+15550101" and transfer["turn"] == 2
    assert transfer["result"].startswith("unsupported") and transfer["t"] >= rec.turns[2].times["first_audio_out"] + 1
    assert hang_up["action"] == "hang_up" and hang_up["result"].startswith("not allowed") and hang_up["turn"] == 3
    assert keypad["action"] == "transfer" and keypad["target"] == "+15550100" and keypad["t"] < 13.2
    assert keypad["result"].startswith("unsupported")


async def test_mapped_digit_cuts_the_greeting_and_hangs_up(store: Store) -> None:
    doc = agent([], {"dtmf": {"*": {"action": "hang_up"}}}, greeting=LONG)
    rec = await run_call(store, doc, silence(15), [(1.5, "*")])

    assert rec.reason == rec.end_reason == "agent-hangup"
    assert [e["type"] for e in rec.events if e["type"] in ("interruption", "dtmf", "action")] == [
        "dtmf", "interruption", "action"
    ]  # fmt: skip
    [action] = rec.of("action")
    assert action["action"] == "hang_up" and action["result"] == "done" and action["reason"] == "keypad *"
    assert action["t"] < 1.7
    greeting = rec.turns[0]
    assert greeting.interrupted and LONG.startswith(greeting.agent_text) and greeting.agent_text != LONG


async def test_an_interruption_drops_the_action_waiting_behind_the_reply(store: Store) -> None:
    rules = [{"match": r"pressed 7 on", "reply": LONG, "action": "hang_up"}, {"match": "pressed 8", "reply": "Eight."}]
    rec = await run_call(store, agent(rules, {"hang_up": True}), silence(9), [(0.5, "7"), (3.0, "8")])

    assert rec.reason == "caller-hangup"
    assert not rec.of("action")
    assert rec.turns[1].interrupted and rec.of("interruption")
    assert rec.turns[2].caller_text == "(the caller pressed 8 on the keypad)" and rec.turns[2].agent_text == "Eight."

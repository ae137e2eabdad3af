"""The talk WebSocket when the agent acts: a hang-up ends the call, sends ``end`` and closes the socket.

A real `parley serve` (SQLite) and a real WebSocket client streaming at real time; the
agent is model-free (canned LLM, espeak) so the calls stay short.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
import websockets

from .support.audio import espeak
from .support.calls import read_call
from .support.service import Service

AGENT: dict[str, Any] = {
    "name": "hanging-up agent",
    "system_prompt": "A test line.",
    "greeting": "Hi.",
    "tts": {"provider": "espeak", "fallback": None},
    "llm": {"provider": "canned", "options": {"rules": [
        {"match": ["goodbye", "bye"], "reply": "Goodbye, have a nice day.", "action": "hang_up"},
    ]}},
    "actions": {"hang_up": True, "transfer_to": "+15550100", "dtmf": {"#": {"action": "hang_up"}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def agent_doc() -> dict[str, Any]:
    return AGENT  # the shared fixtures (tests/support/served.py) run `parley serve`, make the key and this agent


async def talk(url: str, key: str, pcm: np.ndarray, messages: dict[float, dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream ``pcm`` at real time, send JSON ``messages`` at their times; events until the server closes."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:

        async def send() -> None:
            start = time.monotonic()
            due = sorted(messages.items(), key=lambda kv: kv[0])
            for k in range(len(pcm) // 320):
                while due and due[0][0] <= k * 0.02:
                    await ws.send(json.dumps(due.pop(0)[1]))
                await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
                await ws.send(pcm[k * 320 : (k + 1) * 320].astype("<i2").tobytes())

        sender = asyncio.create_task(send())
        try:
            async for message in ws:  # ends when the server closes the socket
                if isinstance(message, str):
                    events.append(json.loads(message))
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        assert ws.close_code == 1000
    return events


def test_keypad_and_llm_hang_ups_end_the_call_and_close_the_socket(
    service: Service, key: str, agent: dict[str, Any]
) -> None:
    url = service.url.replace("http", "ws") + f"/v1/agents/{agent['id']}/talk"

    quiet = np.zeros(16000 * 20, np.int16)
    messages = {1.5: {"type": "dtmf", "digit": "x"}, 2.0: {"type": "dtmf", "digit": "#"}}
    events = asyncio.run(asyncio.wait_for(talk(url, key, quiet, messages), 60))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "call" and kinds[-1] == "end" and "error" in kinds
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["#"]
    [action] = [e for e in events if e["type"] == "action"]
    assert action["action"] == "hang_up" and action["result"] == "done"
    assert events[-1]["reason"] == "agent-hangup"

    pcm = np.concatenate([np.zeros(16000 * 2, np.int16), espeak("Goodbye!"), np.zeros(16000 * 20, np.int16)])
    events = asyncio.run(asyncio.wait_for(talk(url, key, pcm, {}), 60))
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "agent-hangup"
    heard = [e["text"] for e in events if e["type"] == "agent_text" and e["turn"] == 1]
    assert heard == ["Goodbye, have a nice day."]
    [action] = [e for e in events if e["type"] == "action"]
    assert action["turn"] == 1 and action["result"] == "done"

    with service.client(key) as c:
        call = c.get(f"/v1/calls/{events[0]['call_id']}").json()
    assert call["status"] == "ended" and call["end_reason"] == "agent-hangup"
    read_call(call).expect.only_event("action").has(action="hang_up", result="done")

"""A scenario against a running ``parley serve``, over the talk WebSocket (docs/talk.md).

The protocol takes audio only, so every scenario is spoken (the synthetic voice, or its recordings), streamed at
real time; each turn waits for the agent's reply (its ``agent_text`` event) before the next is spoken. What the
test checks comes from the call's events: final transcripts, replies as heard, per-turn metrics, actions, tool
calls and routing. The URL is the operator's own server, given on the command line (not a tenant's setting), so
it is not put through the SSRF guard.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from parley.calls.synthetic_caller import RATE
from parley.testing.audio_call import turn_samples
from parley.testing.expect import CallResult, TurnResult
from parley.testing.scenarios import Scenario, TestFile

FRAME = RATE // 50  # 20 ms
REPLY_TIMEOUT_S = 60.0


@dataclass
class _Events:
    """The call's events as they arrive; ``replied`` wakes the sender after each agent turn."""

    items: list[dict[str, Any]] = field(default_factory=list)
    replied: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False

    def replies(self) -> int:
        return sum(1 for e in self.items if e.get("type") == "agent_text" and e.get("turn", 0) > 0)


async def _read(ws: Any, events: _Events) -> None:
    async for message in ws:
        if isinstance(message, str):
            event = json.loads(message)
            events.items.append(event)
            events.ended = events.ended or event.get("type") == "end"
            events.replied.set()


async def _stream(ws: Any, pcm: np.ndarray, clock: list[float]) -> None:
    """Send ``pcm`` in 20 ms frames at real time (``clock``: when the next frame is due)."""
    for k in range(0, pcm.size, FRAME):
        await asyncio.sleep(max(0.0, clock[0] - time.monotonic()))
        await ws.send(np.asarray(pcm[k : k + FRAME], dtype="<i2").tobytes())
        clock[0] += FRAME / RATE


async def _until(ws: Any, events: _Events, done: Any, clock: list[float]) -> None:
    """Silence until ``done()`` (the agent answered, or the call ended), at most the reply timeout."""
    quiet = np.zeros(FRAME, dtype=np.int16)
    limit = time.monotonic() + REPLY_TIMEOUT_S
    while not done() and not events.ended and time.monotonic() < limit:
        await _stream(ws, quiet, clock)


async def _speak(ws: Any, scenario: Scenario, audio: list[np.ndarray], events: _Events, clock: list[float]) -> None:
    """Each turn after the agent's previous reply; ``end`` after the last (the agent may hang up first)."""
    try:
        await _until(ws, events, lambda: any(e.get("type") == "agent_text" for e in events.items), clock)
        for i, (turn, pcm) in enumerate(zip(scenario.turns, audio, strict=True), start=1):
            if events.ended:
                return
            await _stream(ws, pcm, clock)
            await _until(ws, events, lambda n=i: events.replies() >= n, clock)
            await _stream(ws, np.zeros(int(RATE * min(turn.pause_ms, 1000) / 1000), dtype=np.int16), clock)
        await ws.send(json.dumps({"type": "end"}))
    except websockets.ConnectionClosed:
        pass  # the agent ended the call: the server sent `end` and closed


async def run_live_call(url: str, key: str, tests: TestFile, scenario: Scenario, seed: int = 0) -> CallResult:
    audio = await turn_samples(tests, scenario, seed)
    events = _Events()
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        reader = asyncio.create_task(_read(ws, events), name="talk-events")
        clock = [time.monotonic()]
        try:
            await _speak(ws, scenario, audio, events, clock)
            await asyncio.wait_for(reader, REPLY_TIMEOUT_S)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return from_events(events.items)


def from_events(items: list[dict[str, Any]]) -> CallResult:
    """The talk events of one call as a test result, a turn per caller turn that got a final transcript."""
    result = CallResult()
    turns: dict[int, TurnResult] = {}
    for e in items:
        kind, n = e.get("type"), int(e.get("turn", -1) or 0)
        if kind == "agent_text" and n == 0:
            result.greeting = str(e.get("text", ""))
        elif kind == "transcript" and e.get("final") and n > 0:
            turns.setdefault(n, TurnResult(index=n)).heard = str(e.get("text", ""))
        elif n in turns and kind == "agent_text":
            turns[n].reply, turns[n].interrupted = str(e.get("text", "")), bool(e.get("interrupted"))
        elif n in turns and kind == "turn_metrics":
            turns[n].voice_to_voice = e.get("voice_to_voice")
        elif n in turns and kind == "action" and e.get("result") == "done":
            turns[n].actions.append({"action": e.get("action"), "target": e.get("target", ""), "reason": ""})
        elif n in turns and kind in ("tool", "route"):
            turns[n].events.append(e)
        elif kind == "end":
            result.end_reason = str(e.get("reason", ""))
        elif kind == "error":
            result.errors.append(str(e.get("message", "")))
    for i, n in enumerate(sorted(turns), start=1):
        turns[n].index = i
        result.turns.append(turns[n])
    return result

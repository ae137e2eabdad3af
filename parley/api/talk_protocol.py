"""The talk WebSocket's protocol (docs/talk.md): PCM16 mono 16 kHz both ways, JSON events as text frames.

Client frames in: binary audio, ``end``, ``dtmf``; anything else is answered with an ``error`` event and the call
goes on. Events out: ``call`` first, then the call's record events as they are written, ``end`` last.
The socket is the whole call: when the agent hangs up, the call ends and the client is sent ``end``; a transfer
has nowhere to go (recorded as unsupported, the conversation goes on).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import structlog
from fastapi import WebSocketDisconnect

from parley.calls.control import CallControl
from parley.calls.identity import CallTarget
from parley.calls.line import CallEvents, CallLine
from parley.calls.live import LiveCall
from parley.calls.ws_bridge import Digit, Socket
from parley.pipeline.frames import DTMF_DIGITS
from parley.transports.traits import TransportTraits

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 64_000  # 2 s of audio: a client sending more per message is not streaming
MAX_TEXT_CHARS = 1_000  # the client's events are tiny: {"type": "dtmf", "digit": "5"}
TALK = TransportTraits("talk")  # 16 kHz; a client streaming a file at once is paced to the call clock


class TalkControl(CallControl):
    """Hanging up needs nothing from the socket here: the call ends, then the route sends ``end`` and closes."""

    async def hang_up(self, reason: str) -> None:
        log.info("talk_agent_hangup", reason=reason)


def text_frame(text: str) -> tuple[Literal["end", "dtmf", "error"], str]:
    """What a client text frame asks: ``end``, a ``dtmf`` digit, or an ``error`` message to answer (the call goes on).

    Bounded first: a deeply nested frame makes ``json.loads`` raise RecursionError, which would end the call.
    """
    if len(text) > MAX_TEXT_CHARS:
        return "error", f"text frames are limited to {MAX_TEXT_CHARS} characters"
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return "error", "text frames must be JSON events"
    if not isinstance(event, dict):
        return "error", "text frames must be JSON objects"
    if event.get("type") == "end":
        return "end", ""
    if event.get("type") == "dtmf":
        digit = event.get("digit")
        if isinstance(digit, str) and len(digit) == 1 and digit in DTMF_DIGITS:
            return "dtmf", digit
        return "error", f"dtmf digit must be one of {DTMF_DIGITS}"
    return "error", 'unknown event; send binary PCM16, {"type": "dtmf", "digit": "1"} or {"type": "end"}'


class TalkWire(CallEvents):
    """The talk WebSocket as a :class:`~parley.calls.ws_bridge.Wire`, and the listener for its call's events."""

    name = "talk"

    def __init__(self, socket: Socket, target: CallTarget) -> None:
        self.socket = socket
        self.target = target
        self.line = CallLine(TALK, socket.send_bytes, TalkControl(), self)

    async def send_event(self, event: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(event))

    # CallEvents
    async def opened(self, call_id: uuid.UUID) -> None:
        t = self.target
        await self.send_event(
            {
                "type": "call",
                "call_id": str(call_id),
                "sample_rate": TALK.sample_rate,
                "agent_id": str(t.agent_id),
                "agent_version": t.agent_version,
            }
        )

    async def event(self, event: dict[str, Any]) -> None:
        await self.send_event(event)

    # Wire
    async def inputs(self) -> AsyncIterator[bytes | Digit]:
        """The caller's audio until ``end`` (or raises WebSocketDisconnect); bad frames get an ``error`` event."""
        while True:
            message = await self.socket.receive()
            if message is None:
                raise WebSocketDisconnect(1000)
            if isinstance(message, bytes):
                if len(message) <= MAX_MESSAGE_BYTES:
                    yield message
                else:
                    await self.send_event(
                        {"type": "error", "message": f"audio messages are limited to {MAX_MESSAGE_BYTES} bytes"}
                    )
                continue
            kind, value = text_frame(message)
            if kind == "end":
                return
            if kind == "dtmf":
                yield Digit(value)
            else:
                await self.send_event({"type": "error", "message": value})

    async def ended(self, call: LiveCall, reason: str) -> None:
        await self.send_event({"type": "end", "reason": reason, "call_id": str(call.call_id)})

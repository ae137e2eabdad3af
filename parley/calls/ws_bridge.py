"""One live call over a WebSocket: the bridge the talk WebSocket and every carrier's media stream share.

A socket kind (the talk protocol, a carrier's :class:`~parley.telephony.wire.StreamProtocol`) describes itself
as a :class:`Wire`: the :class:`~parley.calls.line.CallLine` its call gets, and its messages read into the
caller's audio and keypad presses. :func:`run_socket_call` does the rest for all of them: load the agent's
models (models load before a handshake completes, so a client streams only once the agent can listen), run the
:class:`~parley.calls.live.LiveCall`, then free the models and close the socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from parley.calls.capacity import CAPACITY, Busy
from parley.calls.identity import CallInfo, CallTarget
from parley.calls.line import CallLine
from parley.calls.live import LiveCall
from parley.calls.record_writer import CallStore
from parley.calls.session import Services
from parley.services.secrets import SecretSource

log = structlog.get_logger(__name__)

INTERNAL_ERROR, TRY_AGAIN_LATER = 1011, 1013
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


class Socket:
    """A WebSocket's two ends, guarded: sends after the far end went are dropped, and close happens once."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.broken = False  # a send failed: the far end is gone, nothing more is sent
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self.ws.application_state is WebSocketState.CONNECTED

    async def receive(self) -> str | bytes | None:
        """The next message; None once the far end has gone."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is not None:
            return bytes(data)
        text = message.get("text")
        return text if text is not None else ""

    async def send(self, message: str | bytes) -> None:
        if self.broken or self._closed or not self.connected:
            return
        try:
            async with self._lock:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_text(message)
        except _SEND_ERRORS:
            self.broken = True

    async def send_bytes(self, data: bytes) -> None:
        await self.send(data)

    async def accept(self) -> None:
        """Complete the handshake, unless the socket's router already did."""
        if self.ws.application_state is WebSocketState.CONNECTING:
            await self.ws.accept()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        if self.connected:
            try:
                await self.ws.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))
            except _SEND_ERRORS:
                pass

    async def refuse(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``, accepting first if need be: closing before accepting answers HTTP
        403, which a browser's WebSocket hides (it sees only 1006), while a close frame's code and reason reach
        ``onclose``."""
        await self.accept()
        await self.close(code, reason)


@dataclass(frozen=True)
class Digit:
    """A keypad press read off the socket."""

    digit: str


class Wire(Protocol):
    """One kind of socket, as the bridge sees it."""

    #: the prefix of the bridge's log events ("talk", "stream")
    name: str
    socket: Socket
    line: CallLine

    def inputs(self) -> AsyncIterator[bytes | Digit]:
        """The caller's audio and key presses until the far end ends the call (raises when the socket drops)."""
        ...

    async def ended(self, call: LiveCall, reason: str) -> None:
        """The call is over and recorded; the socket is still open."""
        ...


async def run_socket_call(
    wire: Wire, target: CallTarget, store: CallStore, info: CallInfo, secrets: SecretSource
) -> None:
    """Carry one call over ``wire``'s socket; the socket is closed when this returns. A worker that takes no more
    calls (at its cap, draining, its registry unreachable) closes it at once with 1013 and the reason."""
    slot = CAPACITY.take(wire.line.traits.name)
    if isinstance(slot, Busy):
        await wire.socket.refuse(TRY_AGAIN_LATER, f"busy: {slot.message}")
        return
    with slot:  # held until the call's record is written (drain waits for it)
        try:
            services = await Services.create(target.document, secrets)
        except Exception as exc:
            log.exception(f"{wire.name}_services_failed", transport=wire.line.traits.name)
            await wire.socket.refuse(INTERNAL_ERROR, f"the agent's services cannot start: {exc}")
            return
        await wire.socket.accept()
        call = LiveCall(target, services, store, wire.line, info)
        try:
            reason = await call.run(_caller_audio(wire, call))
            await wire.ended(call, reason)
        finally:
            await services.aclose()
            await wire.socket.close()


async def _caller_audio(wire: Wire, call: LiveCall) -> AsyncIterator[bytes]:
    async for item in wire.inputs():
        if isinstance(item, Digit):
            await call.dtmf(item.digit)
        else:
            yield item

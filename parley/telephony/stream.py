"""The bridge from a carrier's media stream to a call, the same for every carrier.

A carrier declares a :class:`~parley.telephony.wire.StreamProtocol` — how its WebSocket
messages map to events and how agent audio, marks and "clear" are written on its wire —
and :func:`run_media_stream` does the rest for all of them: wait for the stream's
start, find the agent, then hand the call to the WebSocket bridge that the talk
WebSocket shares (:mod:`parley.calls.ws_bridge`), with this stream as its wire:
the caller's audio and DTMF in, marks and back-pressure to the control, the
agent's audio back (paced by the playout, one message per 20 ms frame). Garbage
and out-of-order messages are logged and skipped; a stream that sends only
garbage is closed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from fastapi import WebSocket, WebSocketDisconnect

from parley.calls.control import CallControl
from parley.calls.identity import CallInfo, CallTarget
from parley.calls.line import CallLine
from parley.calls.live import LiveCall
from parley.calls.record_writer import CallStore
from parley.calls.ws_bridge import Digit, Socket, run_socket_call
from parley.store.credentials import TenantSecrets
from parley.telephony.carrier import Carrier
from parley.telephony.routing import NoSuchAgent, resolve_target
from parley.telephony.state import TelephonyState
from parley.telephony.wire import (
    Dtmf,
    Event,
    Info,
    MarkPlayed,
    Media,
    Outgoing,
    Pause,
    SequenceCheck,
    Stop,
    StreamProtocol,
    StreamStart,
    WireError,
    json_event,
    json_object,
    member,
)
from parley.transports.traits import TransportTraits

#: the wire's names, where they were before parley.telephony.wire held them
__all__ = [
    "Dtmf",
    "Event",
    "Info",
    "MarkPlayed",
    "Media",
    "Outgoing",
    "Pause",
    "SequenceCheck",
    "Stop",
    "StreamControl",
    "StreamProtocol",
    "StreamStart",
    "WireError",
    "json_event",
    "json_object",
    "member",
    "run_media_stream",
]

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 10.0  # a stream that does not say who it is within this is closed
MAX_BAD_MESSAGES = 200  # garbage after this many is not a confused peer but a broken one
MAX_MESSAGE_BYTES = 64_000


# --- the transport side of a call ------------------------------------------------------


class StreamControl(CallControl):
    """Sends agent audio on the socket, counts marks, clears on barge-in, honours back-pressure."""

    def __init__(self, socket: Socket, protocol: StreamProtocol) -> None:
        self.socket = socket
        self.protocol = protocol
        self.frames_sent = 0
        self._confirmed = 0  # speech frames the far end has played (from marks)
        self._marks_sent = 0
        self._cleared_below = 0  # marks numbered below this were cleared: their echoes say nothing
        self._resume = asyncio.Event()
        self._resume.set()
        self.transfer_to: Callable[[str], Awaitable[None]] | None = None
        self.hang_up_with: Callable[[], Awaitable[None]] | None = None

    async def send(self, message: Outgoing) -> None:
        await self.socket.send(message)

    async def send_audio(self, pcm: bytes) -> None:
        if not self._resume.is_set():
            return  # the far end asked us to pause: the playout keeps time, these frames are not sent
        for message in self.protocol.audio(pcm):
            await self.send(message)
        self.frames_sent += 1
        if self.protocol.supports_marks and self.frames_sent % self.protocol.mark_every == 0:
            await self._send_mark()

    async def _send_mark(self) -> None:
        self._marks_sent += 1
        mark = self.protocol.mark(f"p{self._marks_sent}:{self.frames_sent}")
        if mark is not None:
            await self.send(mark)

    def mark_played(self, name: str) -> None:
        try:
            number, frames = (int(x) for x in name.lstrip("p").split(":", 1))
        except ValueError:
            log.info("stream_unknown_mark", name=name[:40])
            return
        if number >= self._cleared_below:
            self._confirmed = max(self._confirmed, frames)

    def pause(self, paused: bool) -> None:
        if paused:
            self._resume.clear()
        else:
            self._resume.set()

    # CallControl
    async def clear(self) -> None:
        self._cleared_below = self._marks_sent + 1
        message = self.protocol.clear()
        if message is not None:
            await self.send(message)

    def played_frames(self) -> int | None:
        return self._confirmed if self.protocol.supports_marks else None

    async def hang_up(self, reason: str) -> None:
        if self.hang_up_with is not None:
            await self.hang_up_with()
        message = self.protocol.hangup()
        if message is not None:
            await self.send(message)
        await self.socket.close(1000)

    async def transfer(self, target: str) -> None:
        if self.transfer_to is None:
            await super().transfer(target)
            return
        await self.transfer_to(target)


class _BadMessages:
    """Counts garbage; logs the first and then at most once a second."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.count = 0
        self._last_log = 0.0

    def add(self, why: str) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count == 1 or now - self._last_log > 1.0:
            self._last_log = now
            log.warning("stream_bad_message", transport=self.transport, error=why[:200], count=self.count)
        if self.count > MAX_BAD_MESSAGES:
            raise WireError(f"more than {MAX_BAD_MESSAGES} malformed messages")


TargetFinder = Callable[[StreamStart], Awaitable[CallTarget]]


async def run_media_stream(
    ws: WebSocket,
    carrier: Carrier,
    protocol: StreamProtocol,
    state: TelephonyState,
    find_target: TargetFinder | None = None,
) -> None:
    """Carry one call of ``carrier`` over an accepted WebSocket, from the first start event on the wire.
    ``find_target`` names its agent (default: the start's parameters, unsigned: a PBX that proved who it is)."""
    bad = _BadMessages(protocol.name)
    started = await _started(ws, protocol, bad)
    if started is None:
        return
    start, pending = started  # events after the start in the same message are pending
    try:
        target = await (find_target or _default_finder(state))(start)
    except NoSuchAgent as exc:
        log.warning("stream_unknown_agent", transport=protocol.name, error=str(exc))
        await Socket(ws).close(1008, str(exc))
        return
    except Exception as exc:  # the database or Redis failed: a clean close, never an abnormal one
        log.warning("stream_target_failed", transport=protocol.name, error=type(exc).__name__)
        await Socket(ws).close(1011, "the call's agent could not be looked up")
        return
    socket = Socket(ws)
    control = StreamControl(socket, protocol)
    _carrier_actions(control, carrier, state, start.provider_call_id, f"http://{ws.url.netloc}")
    info = CallInfo(
        caller=start.caller,
        called=start.called,
        provider_call_id=start.provider_call_id,
        worker_id=state.settings.worker_id,
        call_id=_uuid(start.params.get("call")),
        direction="outbound" if start.params.get("call") else "inbound",
    )
    wire = _StreamWire(socket, protocol, control, pending, bad)
    secrets = TenantSecrets(state.db, state.settings, target.tenant_id)
    await run_socket_call(wire, target, CallStore(state.db, state.blobs), info, secrets)


async def _started(
    ws: WebSocket, protocol: StreamProtocol, bad: _BadMessages
) -> tuple[StreamStart, list[Event]] | None:
    """The stream's start and the events after it in the same message; None (closed) when it never starts."""
    try:
        start, pending = await asyncio.wait_for(_await_start(ws, protocol, bad), START_TIMEOUT_S)
    except (TimeoutError, WireError, WebSocketDisconnect) as exc:
        log.warning("stream_no_start", transport=protocol.name, error=str(exc) or type(exc).__name__)
        await Socket(ws).close(1008, "expected a start event")
        return None
    return None if start is None else (start, pending)  # None: gone before it started


def _carrier_actions(
    control: StreamControl, carrier: Carrier, state: TelephonyState, call_id: str | None, base_url: str
) -> None:
    """What the carrier's API does to this call, for the agent's actions (transfer, hang up)."""
    if carrier.transfers:

        async def transfer(to: str) -> None:
            if not call_id:
                raise RuntimeError("the stream did not name its call")
            await carrier.transfer(state, call_id, to, base_url)

        control.transfer_to = transfer
    if call_id:
        control.hang_up_with = lambda: carrier.hang_up(state, call_id)


class _StreamWire:
    """A carrier's media stream as the bridge's wire: its events act on the call and the control as they come."""

    name = "stream"

    def __init__(
        self, socket: Socket, protocol: StreamProtocol, control: StreamControl, pending: list[Event], bad: _BadMessages
    ) -> None:
        self.socket = socket
        self.protocol = protocol
        self.control = control
        self.pending = pending
        self.bad = bad
        #: carriers send in real time: their input is not paced (see TransportTraits.pace_input)
        traits = TransportTraits(protocol.name, protocol.sample_rate, pace_input=False)
        self.line = CallLine(traits, control.send_audio, control)

    async def inputs(self) -> AsyncIterator[bytes | Digit]:
        """The caller's audio and DTMF, for the call; marks and pauses go to the control."""
        protocol, control = self.protocol, self.control
        events = list(self.pending)
        while True:
            for event in events:
                if isinstance(event, Media):
                    yield event.pcm
                elif isinstance(event, Dtmf):
                    yield Digit(event.digit)
                elif isinstance(event, MarkPlayed):
                    control.mark_played(event.name)
                elif isinstance(event, Pause):
                    control.pause(event.paused)
                elif isinstance(event, Stop):
                    log.info("stream_stopped", transport=protocol.name, reason=event.reason)
                    return
                elif isinstance(event, StreamStart):
                    self.bad.add("a second start event")
                elif isinstance(event, Info):
                    log.info("stream_info", transport=protocol.name, what=event.what[:200])
            message = await self.socket.receive()
            if message is None:
                raise WebSocketDisconnect(1000)
            events = _parse(protocol, message, self.bad)

    async def ended(self, call: LiveCall, reason: str) -> None:
        log.info("stream_call_ended", transport=self.protocol.name, call_id=str(call.call_id), reason=reason)


def _parse(protocol: StreamProtocol, message: str | bytes, bad: _BadMessages) -> list[Event]:
    if len(message) > MAX_MESSAGE_BYTES:
        bad.add(f"message of {len(message)} bytes")
        return []
    try:
        return protocol.parse(message)
    except WireError as exc:
        bad.add(str(exc))
        return []


async def _await_start(
    ws: WebSocket, protocol: StreamProtocol, bad: _BadMessages
) -> tuple[StreamStart | None, list[Event]]:
    socket = Socket(ws)
    while True:
        message = await socket.receive()
        if message is None:
            return None, []
        events = _parse(protocol, message, bad)
        for i, event in enumerate(events):
            if isinstance(event, StreamStart):
                return event, events[i + 1 :]
            if isinstance(event, Stop):
                return None, []
            if isinstance(event, Media | Dtmf | MarkPlayed):
                bad.add(f"{type(event).__name__.lower()} before the stream started")


def _default_finder(state: TelephonyState) -> TargetFinder:
    async def find(start: StreamStart) -> CallTarget:
        p = start.params
        return await resolve_target(
            state.db,
            agent_ref=p.get("agent"),
            called=start.called,
            tenant_ref=p.get("tenant"),
            default_tenant=state.settings.telephony_tenant,
        )

    return find


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None

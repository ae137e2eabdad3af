"""What every carrier media stream shares: parsed wire events, a protocol interface, and the bridge to a call.

A provider module implements :class:`StreamProtocol` — how its WebSocket messages
map to events and how agent audio, marks and "clear" are written on its wire —
and :func:`run_media_stream` does the rest for all of them: wait for the stream's
start, find the agent, load its models, run a :class:`LiveCall`, feed it the
caller's audio and DTMF, and send the agent's audio back (paced by the playout,
one message per 20 ms frame). Garbage and out-of-order messages are logged and
skipped; a stream that sends only garbage is closed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from parley.api.state import AppState
from parley.calls.control import CallControl
from parley.calls.live import CallInfo, CallTarget, LiveCall
from parley.calls.session import Services
from parley.store.credentials import TenantSecrets
from parley.telephony.routing import NoSuchAgent, resolve_target

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 10.0  # a stream that does not say who it is within this is closed
MAX_BAD_MESSAGES = 200  # garbage after this many is not a confused peer but a broken one
MAX_MESSAGE_BYTES = 64_000


class WireError(ValueError):
    """A message that does not follow the provider's wire format (the text says how)."""


# --- JSON wire helpers shared by the providers whose messages are JSON ---------------


def json_object(message: str | bytes, what: str = "stream messages") -> dict[str, Any]:
    """One JSON text message as an object; anything else (binary, not JSON, nested too deep) is a WireError."""
    if isinstance(message, bytes):
        raise WireError(f"{what} are JSON text")
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        raise WireError("not JSON") from None
    if not isinstance(data, dict):
        raise WireError("not a JSON object")
    return data


def json_event(message: str | bytes, what: str = "stream messages") -> tuple[dict[str, Any], str]:
    """A JSON message with a string ``event`` name (Twilio, Plivo, Exotel)."""
    data = json_object(message, what)
    if not isinstance(data.get("event"), str):
        raise WireError("no event name")
    return data, data["event"]


def member(data: dict[str, Any], key: str) -> dict[str, Any]:
    """The object ``data[key]``, which the message's event requires."""
    value = data.get(key)
    if not isinstance(value, dict):
        raise WireError(f"{str(data.get('event'))[:32]} without a {key} object")
    return value


class SequenceCheck:
    """Refuses messages whose sequence number (field ``key``) does not increase: replays, reordering."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.last = -1

    def __call__(self, data: dict[str, Any]) -> None:
        seq = data.get(self.key)
        if seq is None:
            return
        try:
            n = int(seq)
        except (TypeError, ValueError, OverflowError):
            raise WireError(f"{self.key} is not a number") from None
        if n <= self.last:
            raise WireError(f"message {n} out of order (after {self.last})")
        self.last = n


# --- events a provider's messages turn into ------------------------------------------


@dataclass
class StreamStart:
    """The stream says which call it carries. ``params`` are the provider's custom parameters."""

    stream_id: str = ""
    provider_call_id: str | None = None
    caller: str | None = None
    called: str | None = None
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Media:
    """Caller audio, already PCM16 mono at the protocol's ``sample_rate``."""

    pcm: bytes


@dataclass
class Dtmf:
    digit: str


@dataclass
class MarkPlayed:
    """The far end played everything sent before the mark called ``name``."""

    name: str


@dataclass
class Pause:
    """Back-pressure: stop (``True``) or resume (``False``) sending agent audio."""

    paused: bool


@dataclass
class Stop:
    reason: str = "caller-hangup"


@dataclass
class Info:
    """Anything else the provider tells us that is worth a line in the log (not an error)."""

    what: str


Event = StreamStart | Media | Dtmf | MarkPlayed | Pause | Stop | Info
Outgoing = str | bytes


class StreamProtocol(ABC):
    """One provider's wire format. A new instance per connection: it may keep per-stream state."""

    #: recorded as the call's transport
    name: str = ""
    #: rate of the audio on the wire (and of the call's pipeline: no resampling per frame)
    sample_rate: int = 8000
    #: the far end echoes marks once it has played the audio before them
    supports_marks: bool = False
    #: send a mark after every this many speech frames (100 ms): what was heard is known to that precision
    mark_every: int = 5

    @abstractmethod
    def parse(self, message: str | bytes) -> list[Event]:
        """Events in one message; raises :class:`WireError` for what the format does not allow."""

    @abstractmethod
    def audio(self, pcm: bytes) -> list[Outgoing]:
        """Messages that carry one 20 ms frame of agent audio (PCM16 at ``sample_rate``)."""

    def mark(self, name: str) -> Outgoing | None:
        return None

    def clear(self) -> Outgoing | None:
        """Message that makes the far end drop audio it has buffered (barge-in), if the protocol has one."""
        return None

    def hangup(self) -> Outgoing | None:
        """Message that ends the call, if the protocol has one (otherwise the socket is closed)."""
        return None


# --- the transport side of a call ------------------------------------------------------


class StreamControl(CallControl):
    """Sends agent audio on the socket, counts marks, clears on barge-in, honours back-pressure."""

    def __init__(self, ws: WebSocket, protocol: StreamProtocol) -> None:
        self.ws = ws
        self.protocol = protocol
        self.frames_sent = 0
        self._confirmed = 0  # speech frames the far end has played (from marks)
        self._marks_sent = 0
        self._cleared_below = 0  # marks numbered below this were cleared: their echoes say nothing
        self._resume = asyncio.Event()
        self._resume.set()
        self._lock = asyncio.Lock()
        self.closed = False
        self.transfer_to: Callable[[str], Awaitable[None]] | None = None
        self.hang_up_with: Callable[[], Awaitable[None]] | None = None

    async def send(self, message: Outgoing) -> None:
        if self.closed or self.ws.application_state is not WebSocketState.CONNECTED:
            return
        try:
            async with self._lock:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_text(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.closed = True

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
        await self.close(1000)

    async def transfer(self, target: str) -> None:
        if self.transfer_to is None:
            await super().transfer(target)
            return
        await self.transfer_to(target)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        if self.ws.application_state is WebSocketState.CONNECTED:
            try:
                await self.ws.close(code=code, reason=reason[:120])
            except (RuntimeError, OSError, WebSocketDisconnect):
                pass


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


async def _receive(ws: WebSocket) -> str | bytes | None:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    data = message.get("bytes")
    if data is not None:
        return bytes(data)
    text = message.get("text")
    return text if text is not None else ""


TargetFinder = Callable[[StreamStart], Awaitable[CallTarget]]
ControlSetup = Callable[[StreamControl, StreamStart, CallTarget], None]


async def run_media_stream(
    ws: WebSocket,
    protocol: StreamProtocol,
    state: AppState,
    start: StreamStart | None = None,
    find_target: TargetFinder | None = None,
    setup_control: ControlSetup | None = None,
) -> None:
    """Carry one call over an accepted WebSocket: ``start`` when the connection itself said who it is (query
    parameters), else the first start event on the wire."""
    bad = _BadMessages(protocol.name)
    pending: list[Event] = []  # events after the start in the same message
    try:
        if start is None:
            start, pending = await asyncio.wait_for(_await_start(ws, protocol, bad), START_TIMEOUT_S)
    except (TimeoutError, WireError, WebSocketDisconnect) as exc:
        log.warning("stream_no_start", transport=protocol.name, error=str(exc) or type(exc).__name__)
        await _close(ws, 1008, "expected a start event")
        return
    if start is None:
        return  # gone before it started
    try:
        target = await (find_target or _default_finder(state))(start)
    except NoSuchAgent as exc:
        log.warning("stream_unknown_agent", transport=protocol.name, error=str(exc))
        await _close(ws, 1008, str(exc))
        return
    except Exception as exc:  # the database or Redis failed: a clean close, never an abnormal one
        log.warning("stream_target_failed", transport=protocol.name, error=type(exc).__name__)
        await _close(ws, 1011, "the call's agent could not be looked up")
        return
    try:
        services = await Services.create(target.document, TenantSecrets(state.db, state.settings, target.tenant_id))
    except Exception as exc:
        log.exception("stream_services_failed", transport=protocol.name)
        await _close(ws, 1011, f"the agent's services cannot start: {exc}")
        return
    control = StreamControl(ws, protocol)
    if setup_control is not None:
        setup_control(control, start, target)
    info = CallInfo(
        caller=start.caller, called=start.called, provider_call_id=start.provider_call_id,
        worker_id=state.settings.worker_id, call_id=_uuid(start.params.get("call")),
        direction="outbound" if start.params.get("call") else "inbound",
    )  # fmt: skip
    call = LiveCall(
        target, services, state.db, state.blobs, protocol.name, control.send_audio,
        sample_rate=protocol.sample_rate, control=control, info=info, pace_input=False,
    )  # fmt: skip

    async def audio_in() -> AsyncIterator[bytes]:
        events = list(pending)
        while True:
            for event in events:
                if isinstance(event, Media):
                    yield event.pcm
                elif isinstance(event, Dtmf):
                    await call.dtmf(event.digit)
                elif isinstance(event, MarkPlayed):
                    control.mark_played(event.name)
                elif isinstance(event, Pause):
                    control.pause(event.paused)
                elif isinstance(event, Stop):
                    log.info("stream_stopped", transport=protocol.name, reason=event.reason)
                    return
                elif isinstance(event, StreamStart):
                    bad.add("a second start event")
                elif isinstance(event, Info):
                    log.info("stream_info", transport=protocol.name, what=event.what[:200])
            message = await _receive(ws)
            if message is None:
                raise WebSocketDisconnect(1000)
            events = _parse(protocol, message, bad)

    try:
        reason = await call.run(audio_in())
        log.info("stream_call_ended", transport=protocol.name, call_id=str(call.call_id), reason=reason)
    finally:
        await services.aclose()
        await control.close()


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
    while True:
        message = await _receive(ws)
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


def _default_finder(state: AppState) -> TargetFinder:
    async def find(start: StreamStart) -> CallTarget:
        p = start.params
        return await resolve_target(
            state.db, agent_ref=p.get("agent"), called=start.called, tenant_ref=p.get("tenant"),
            default_tenant=state.settings.telephony_tenant,
        )  # fmt: skip

    return find


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state is WebSocketState.CONNECTED:
        try:
            await ws.close(code=code, reason=reason[:120])
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass

"""A carrier's wire, parsed: the events its media-stream messages turn into, and the interface a protocol implements.

Every carrier module implements :class:`StreamProtocol` (its messages → :data:`Event` s, agent audio, marks and
"clear" → its messages). What several wire formats share lives here once: JSON messages with an ``event`` name,
increasing sequence numbers, base64 media payloads and the DTMF digit set.
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from parley.pipeline.frames import is_dtmf_digit  # the keypad's keys, A-D column included


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


def b64_payload(value: object) -> bytes:
    """A media message's base64 payload, decoded; anything but base64 text is a WireError."""
    try:
        return base64.b64decode(value if isinstance(value, str) else "?", validate=True)
    except (binascii.Error, ValueError):
        raise WireError("media payload is not base64") from None


def dtmf(digit: str) -> Dtmf:
    """The event for one keypad digit; anything else (empty, several, unknown) is a WireError."""
    if not is_dtmf_digit(digit):
        raise WireError(f"bad DTMF digit {digit[:8]!r}")
    return Dtmf(digit)


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

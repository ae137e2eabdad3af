"""The transport's side of one live call: what it is, how audio and events reach the far end, what it can do.

A transport hands :class:`~parley.calls.live.LiveCall` one :class:`CallLine` instead of a handful of loose
callbacks and flags; each part has a default that describes a transport with nothing to say.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from parley.calls.control import CallControl
from parley.transports.traits import TransportTraits

SendAudio = Callable[[bytes], Awaitable[None]]


class CallEvents:
    """Who hears about the call besides its record (the talk WebSocket's client); by default no one."""

    async def opened(self, call_id: uuid.UUID) -> None:
        """The call's record exists and its pipeline is built; no audio has moved yet."""

    async def event(self, event: dict[str, Any]) -> None:
        """One event of the call, as it is written to the record, in the record's order."""


@dataclass(frozen=True)
class CallLine:
    """Everything a live call needs from its transport."""

    traits: TransportTraits
    #: one 20 ms frame of agent audio (PCM16 at ``traits.sample_rate``)
    send_audio: SendAudio
    control: CallControl = field(default_factory=CallControl)
    events: CallEvents = field(default_factory=CallEvents)

"""What a transport can do to its call besides carrying audio.

Each transport (a Twilio stream, a SIP dialog, the talk WebSocket) implements
the parts its protocol has; the defaults describe a transport that can do none
of them. :class:`LiveCall` calls these hooks: ``clear`` on barge-in,
``played_frames`` to learn what the caller really heard, ``hang_up``,
``transfer`` and ``send_dtmf`` when the agent acts.
"""

from __future__ import annotations


class ActionUnsupported(RuntimeError):
    """This transport cannot carry out the action (recorded in the call's events, the call goes on)."""


class CallControl:
    """Transport hooks with do-nothing defaults."""

    async def clear(self) -> None:
        """Barge-in: drop agent audio the far end has buffered but not played yet."""

    def played_frames(self) -> int | None:
        """Agent speech frames (20 ms) the far end has confirmed playing, or None to trust what was sent."""
        return None

    async def hang_up(self, reason: str) -> None:
        """End the call from Parley's side."""
        raise ActionUnsupported(f"{type(self).__name__} cannot hang up")

    async def transfer(self, target: str) -> None:
        """Hand the caller to ``target`` (a phone number or SIP URI); Parley's part of the call ends."""
        raise ActionUnsupported(f"{type(self).__name__} cannot transfer calls")

    async def send_dtmf(self, digits: str) -> None:
        """Press ``digits`` (keypad keys) towards the far end, in order."""
        raise ActionUnsupported(f"{type(self).__name__} cannot send DTMF")

"""What a transport is, as the call it carries needs to know: declared by the transport, read by the call."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransportTraits:
    """A transport's audio habits.

    ``sample_rate`` is the rate of its audio (8000 for G.711 phone calls): the call's pipeline runs at it, so no
    audio is resampled per frame on the media path.

    ``continuous_output``: the far end expects a frame every 20 ms, silence too (RTP); otherwise (WebSockets) only
    agent speech is sent, and the recorder pads the silent side.

    ``pace_input``: a client that sends faster than real time (a file streamed at once) is paced back to the call
    clock, so audio time and stage times stay one timeline. Carriers send in real time: a burst from them is a
    backlog (audio that queued while the call started) and must be caught up at once, or every reply would come
    that much later for the rest of the call, so they set it False.
    """

    #: recorded with the call (``talk``, ``twilio``, ``sip`` …)
    name: str
    sample_rate: int = 16000
    continuous_output: bool = False
    pace_input: bool = True

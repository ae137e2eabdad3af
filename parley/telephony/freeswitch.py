"""FreeSWITCH (mod_audio_stream): Parley is the WebSocket server a channel's media bug streams to.

``uuid_audio_stream <uuid> start ws://parley:8000/telephony/freeswitch/stream?agent=… mono 16k {json}``
starts a stream. Wire format (github.com/amigniter/mod_audio_stream, README): the
optional metadata text is the first message (Parley reads a JSON object's
``agent``, ``tenant``, ``caller``, ``called`` and ``uuid``), then BINARY frames of
16-bit linear PCM, mono, at the rate asked for (8k or 16k; ``?rate=8000`` tells
Parley when it is not 16k). Agent audio goes back in the README's documented form,
one 20 ms frame per message: ``{"type": "streamAudio", "data": {"audioDataType":
"raw", "sampleRate": 16000, "audioData": <base64>}}`` (mod_audio_stream 1.0.3 and
later play it on the channel; older builds only raise a ``mod_audio_stream::play``
event per message).

The protocol has no clear, mark or hang-up message: on barge-in Parley stops
sending (the module's buffer holds about one frame, as Parley paces in real time),
and hanging up closes the socket (the dialplan decides what happens next).
"""

from __future__ import annotations

import base64
import json

import structlog
from fastapi import APIRouter, Depends, WebSocket

from parley.api.deps import State
from parley.config import Settings
from parley.telephony.stream import (
    Event,
    Info,
    Media,
    Outgoing,
    StreamProtocol,
    StreamStart,
    WireError,
    run_media_stream,
)
from parley.telephony.webhooks import carrier_configured, safe_equal, source_limit

log = structlog.get_logger(__name__)
router = APIRouter(
    prefix="/telephony/freeswitch", tags=["telephony"],
    dependencies=[Depends(source_limit), Depends(carrier_configured("freeswitch"))],
)  # fmt: skip

#: metadata keys Parley reads (the rest is ignored)
KEYS = ("agent", "tenant", "caller", "called", "uuid", "call")


class FreeSwitchStream(StreamProtocol):
    """mod_audio_stream frames ↔ call events. The first message, whatever it is, starts the call."""

    name = "freeswitch"
    sample_rate = 16000

    def __init__(self, params: dict[str, str] | None = None, sample_rate: int = 16000) -> None:
        self.params = dict(params or {})
        self.sample_rate = sample_rate
        self.started = False

    def parse(self, message: str | bytes) -> list[Event]:
        if isinstance(message, bytes):
            if len(message) % 2:
                raise WireError(f"audio frame of odd length {len(message)}")
            media: list[Event] = [Media(message)] if message else []
            return media if self.started else [self._start({}), *media]
        if self.started:
            return [Info(f"text from FreeSWITCH: {message[:80]}")]
        return [self._start(_metadata(message))]

    def _start(self, metadata: dict[str, str]) -> StreamStart:
        self.started = True
        params = {**metadata, **self.params}  # the URL Parley was reached at wins over what the call says
        call_uuid = params.get("uuid", "")
        return StreamStart(
            stream_id=call_uuid, provider_call_id=call_uuid or None, caller=params.get("caller") or None,
            called=params.get("called") or None, params=params,
        )  # fmt: skip

    def audio(self, pcm: bytes) -> list[Outgoing]:
        data = {"audioDataType": "raw", "sampleRate": self.sample_rate, "audioData": base64.b64encode(pcm).decode()}
        return [json.dumps({"type": "streamAudio", "data": data})]


def _metadata(text: str) -> dict[str, str]:
    """The metadata's keys Parley knows, if it is a JSON object (any other text is allowed and ignored)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: str(data[k]) for k in KEYS if isinstance(data.get(k), str | int) and not isinstance(data[k], bool)}


def token_ok(settings: Settings, given: str) -> bool:
    """The stream URL carries PARLEY_FREESWITCH_TOKEN (``…?token=…``); unset, no URL does."""
    expected = settings.freeswitch_token.get_secret_value() if settings.freeswitch_token is not None else ""
    return bool(expected) and safe_equal(given, expected)


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    query = dict(ws.query_params)
    if not token_ok(state.settings, query.pop("token", "")):
        log.warning("freeswitch_bad_token")
        await ws.close(code=1008, reason="invalid token")  # before accept: the handshake gets a 403
        return
    rate = query.pop("rate", "16000")
    if rate not in ("8000", "16000"):
        await ws.close(code=1008, reason="rate must be 8000 or 16000")
        return
    await ws.accept()
    await run_media_stream(ws, FreeSwitchStream(query, int(rate)), state)

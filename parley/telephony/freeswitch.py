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
from fastapi import WebSocket
from pydantic import Field, SecretStr

from parley.config import Settings
from parley.telephony import webhooks, wire
from parley.telephony.carrier import Carrier, CarrierSettings, carriers
from parley.telephony.state import State
from parley.telephony.stream import run_media_stream

log = structlog.get_logger(__name__)
router = webhooks.carrier_router("freeswitch")


class FreeSwitchSettings(CarrierSettings):
    credentials = ("freeswitch_token",)

    freeswitch_token: SecretStr | None = Field(
        None, description="mod_audio_stream URLs must carry ?token=; unset: the FreeSWITCH endpoint refuses everyone"
    )


#: metadata keys Parley reads (the rest is ignored)
KEYS = ("agent", "tenant", "caller", "called", "uuid", "call")


class FreeSwitchStream(wire.StreamProtocol):
    """mod_audio_stream frames ↔ call events. The first message, whatever it is, starts the call."""

    name = "freeswitch"
    sample_rate = 16000

    def __init__(self, params: dict[str, str] | None = None, sample_rate: int = 16000) -> None:
        self.params = dict(params or {})
        self.sample_rate = sample_rate
        self.started = False

    def parse(self, message: str | bytes) -> list[wire.Event]:
        if isinstance(message, bytes):
            if len(message) % 2:
                raise wire.WireError(f"audio frame of odd length {len(message)}")
            media: list[wire.Event] = [wire.Media(message)] if message else []
            return media if self.started else [self._start({}), *media]
        if self.started:
            return [wire.Info(f"text from FreeSWITCH: {message[:80]}")]
        return [self._start(_metadata(message))]

    def _start(self, metadata: dict[str, str]) -> wire.StreamStart:
        self.started = True
        params = {**metadata, **self.params}  # the URL Parley was reached at wins over what the call says
        call_uuid = params.get("uuid", "")
        return wire.StreamStart(
            stream_id=call_uuid,
            provider_call_id=call_uuid or None,
            caller=params.get("caller") or None,
            called=params.get("called") or None,
            params=params,
        )

    def audio(self, pcm: bytes) -> list[wire.Outgoing]:
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
    own = settings.section(FreeSwitchSettings).freeswitch_token
    expected = own.get_secret_value() if own is not None else ""
    return bool(expected) and webhooks.safe_equal(given, expected)


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    query = dict(ws.query_params)
    if not token_ok(state.settings, query.pop("token", "")):
        await webhooks.refuse_handshake(ws, "freeswitch_bad_token", "invalid token")
        return
    rate = query.pop("rate", "16000")
    if rate not in ("8000", "16000"):
        await ws.close(code=1008, reason="rate must be 8000 or 16000")
        return
    await ws.accept()
    await run_media_stream(ws, carriers.get("freeswitch"), FreeSwitchStream(query, int(rate)), state)


@carriers.register
class FreeSwitch(Carrier):
    """FreeSWITCH's mod_audio_stream streams a channel to Parley; its dialplan decides what follows a hang-up."""

    name = "freeswitch"
    settings_model = FreeSwitchSettings
    protocol = FreeSwitchStream
    router = router

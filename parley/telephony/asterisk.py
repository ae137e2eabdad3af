"""Asterisk (chan_websocket, Asterisk 20.16/21.11/22.6/23.0 and later): Parley is the WebSocket server it dials.

``Dial(WebSocket/parley/c(ulaw))`` with a ``websocket_client.conf`` entry whose
``uri`` is ``ws://parley:8000/telephony/asterisk/media?agent=…`` connects a call.
Wire format (docs.asterisk.org/Configuration/Channel-Drivers/WebSocket): BINARY
frames carry raw audio in the negotiated codec (ulaw/alaw 8 kHz, slin 8 kHz,
slin16 16 kHz); TEXT frames carry control messages, either the plain-text form
(``MEDIA_START connection_id:… channel:… format:ulaw optimal_frame_size:160``) or,
with ``f(json)`` or ``control_message_format = json``, JSON objects with an
``event`` (from Asterisk) or ``command`` (to Asterisk). Parley answers in the form
``MEDIA_START`` came in. It sends ``FLUSH_MEDIA`` on barge-in and ``HANGUP`` to end
the call.

Back-pressure: ``MEDIA_XOFF`` pauses sending and frames are dropped, not buffered.
Parley paces its audio in real time, so Asterisk's queue (XOFF at ~900 frames, 18 s)
only fills if Asterisk itself stalls; frames held back then would only play late,
after the words they belong to were counted as spoken, so they are better lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import structlog
from fastapi import WebSocket
from pydantic import Field, SecretStr

from parley.audio import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from parley.config import Settings
from parley.telephony import webhooks, wire
from parley.telephony.carrier import Carrier, CarrierSettings, carriers
from parley.telephony.state import State
from parley.telephony.stream import run_media_stream

log = structlog.get_logger(__name__)
router = webhooks.carrier_router("asterisk")


class AsteriskSettings(CarrierSettings):
    credentials = ("asterisk_password",)

    asterisk_username: str = Field("parley", description="websocket_client.conf username Asterisk sends")
    asterisk_password: SecretStr | None = Field(
        None, description="the Basic password Asterisk must send; unset: the Asterisk endpoint refuses everyone"
    )


def _same(b: bytes) -> bytes:
    return b


Codec = tuple[int, Callable[[bytes], bytes], Callable[[bytes], bytes]]
#: codec → (sample rate, decode to PCM16, encode from PCM16)
CODECS: dict[str, Codec] = {
    "ulaw": (8000, ulaw_to_pcm16, pcm16_to_ulaw),
    "alaw": (8000, alaw_to_pcm16, pcm16_to_alaw),
    "slin": (8000, _same, _same),  # signed linear, little-endian as Asterisk hosts store it
    "slin16": (16000, _same, _same),
}
NAME = re.compile(r"[A-Z][A-Z_]{1,40}")
INFO_EVENTS = {"QUEUE_DRAINED", "MEDIA_BUFFERING_COMPLETED", "MEDIA_MARK_PROCESSED", "STATUS", "ERROR", "MEDIA_END"}
#: channel variables (set with ``__`` so the WebSocket channel inherits them) that stand in for query parameters
VARIABLES = {"PARLEY_AGENT": "agent", "PARLEY_TENANT": "tenant", "PARLEY_CALLER": "caller", "PARLEY_CALLED": "called"}


class AsteriskStream(wire.StreamProtocol):
    """chan_websocket frames ↔ call events."""

    name = "asterisk"
    sample_rate = 8000

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})
        self.codec = ""
        self.json = False  # answer in the form MEDIA_START came in

    def parse(self, message: str | bytes) -> list[wire.Event]:
        if isinstance(message, bytes):
            if not self.codec:
                raise wire.WireError("media before MEDIA_START")
            if self.codec.startswith("slin") and len(message) % 2:
                raise wire.WireError(f"slin frame of odd length {len(message)}")
            return [wire.Media(CODECS[self.codec][1](message))] if message else []
        event, fields = _control(message)
        if event == "MEDIA_START":
            return [self._start(fields, json_form=message.lstrip().startswith("{"))]
        if not self.codec:
            raise wire.WireError(f"{event} before MEDIA_START")
        if event == "DTMF_END":
            return [wire.dtmf(str(fields.get("digit", "")))]
        if event == "MEDIA_XOFF":
            return [wire.Pause(True)]
        if event == "MEDIA_XON":
            return [wire.Pause(False)]
        if event in INFO_EVENTS:
            detail = fields.get("error_text") or fields.get("correlation_id") or ""
            return [wire.Info(f"{event} {str(detail)[:100]}".strip())]
        raise wire.WireError(f"unknown control message {event!r}")

    def _start(self, fields: dict[str, Any], json_form: bool) -> wire.StreamStart:
        codec = str(fields.get("format", ""))
        if codec not in CODECS:
            raise wire.WireError(f"unsupported format {codec[:20]!r}: dial with c(ulaw), c(alaw), c(slin) or c(slin16)")
        self.codec, self.json = codec, json_form
        self.sample_rate = CODECS[codec][0]
        params = dict(self.params)
        variables = fields.get("channel_variables")
        if isinstance(variables, dict):
            for var, key in VARIABLES.items():
                if isinstance(variables.get(var), str) and variables[var] and not params.get(key):
                    params[key] = variables[var]
        channel_id = str(fields.get("channel_id") or fields.get("channel") or "")
        return wire.StreamStart(
            stream_id=str(fields.get("connection_id", "")),
            provider_call_id=channel_id or None,
            caller=params.get("caller") or None,
            called=params.get("called") or None,
            params=params,
        )

    def _command(self, name: str) -> str:
        return json.dumps({"command": name}) if self.json else name

    def audio(self, pcm: bytes) -> list[wire.Outgoing]:
        return [CODECS[self.codec][2](pcm) if self.codec else pcm]

    def clear(self) -> wire.Outgoing | None:
        return self._command("FLUSH_MEDIA")

    def hangup(self) -> wire.Outgoing | None:
        return self._command("HANGUP")


def _control(message: str) -> tuple[str, dict[str, Any]]:
    """A control message's name and fields, from either form."""
    text = message.strip()
    fields: dict[str, Any] = {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise wire.WireError("control message is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise wire.WireError("JSON control message without an event")
        event = data["event"]
        fields = data
    else:
        event, *tokens = text.split(" ") if text else [""]
        last = ""
        for token in tokens:
            key, sep, value = token.partition(":")
            if sep and key:
                fields[key] = value
                last = key
            elif last:  # a value with spaces (ERROR's error_text)
                fields[last] += " " + token
            elif event == "MEDIA_BUFFERING_COMPLETED" and token:
                fields["correlation_id"] = token  # its optional id comes bare
            else:
                raise wire.WireError(f"malformed field {token[:20]!r} in {event[:40]}")
    if not NAME.fullmatch(event):
        raise wire.WireError(f"not a control message: {text[:40]!r}")
    return event, fields


def credentials_ok(settings: Settings, authorization: str) -> bool:
    """HTTP Basic from websocket_client.conf ``username``/``password``: PARLEY_ASTERISK_PASSWORD (unset: nobody)."""
    own = settings.section(AsteriskSettings)
    password = own.asterisk_password.get_secret_value() if own.asterisk_password is not None else ""
    return webhooks.basic_auth_ok(authorization, own.asterisk_username, password)


@router.websocket("/media")
async def media(ws: WebSocket, state: State) -> None:
    if not credentials_ok(state.settings, ws.headers.get("authorization", "")):
        await webhooks.refuse_handshake(ws, "asterisk_bad_credentials", "invalid credentials")
        return
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="media" if "media" in offered else None)  # websocket_client.conf protocols = media
    await run_media_stream(ws, carriers.get("asterisk"), AsteriskStream(dict(ws.query_params)), state)


@carriers.register
class Asterisk(Carrier):
    """Asterisk's chan_websocket dials Parley; the PBX's dialplan does transfers, HANGUP ends the call."""

    name = "asterisk"
    settings_model = AsteriskSettings
    protocol = AsteriskStream
    router = router

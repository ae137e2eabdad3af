"""Exotel: the Voicebot applet's WebSocket (AgentStream), status callbacks and outbound calls.

Wire format (developer.exotel.com/docs/agentstream/stream-voicebot-applet): Exotel
sends JSON ``connected``, ``start`` (``stream_sid``, ``call_sid``, ``from``, ``to``,
``custom_parameters``, ``media_format``), ``media`` (base64 16-bit little-endian PCM,
8 kHz unless the applet URL asks for ``sample-rate=16000``), ``dtmf``, ``mark`` (a
mark Parley sent has played) and ``stop``; Parley sends ``media`` (one 20 ms frame,
320 bytes at 8 kHz: a multiple of 320 as Exotel requires), ``mark`` and ``clear``.

Exotel authenticates the stream with HTTP Basic (``wss://KEY:TOKEN@host/…``): a
stream without ``PARLEY_EXOTEL_API_KEY`` and ``PARLEY_EXOTEL_API_TOKEN`` is refused
(403), and until both are set Exotel is off (every stream and callback refused).
Outbound calls use the AgentStream "connect" API, which dials the number and streams
the answered call straight to Parley.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from fastapi import Request, Response, WebSocket
from pydantic import Field, SecretStr

from parley.config import Settings
from parley.net.clients import shared_client
from parley.telephony import webhooks, wire
from parley.telephony.carrier import Carrier, CarrierSettings, Outbound, carriers
from parley.telephony.state import State, TelephonyState
from parley.telephony.stream import run_media_stream

log = structlog.get_logger(__name__)
router = webhooks.carrier_router("exotel")

FAILED = {"busy", "failed", "no-answer", "canceled", "cancelled"}


class ExotelSettings(CarrierSettings):
    credentials = ("exotel_api_key", "exotel_api_token")

    exotel_account_sid: str | None = None
    exotel_api_key: str | None = None
    exotel_api_token: SecretStr | None = Field(
        None, description="with exotel_api_key, the stream's Basic credentials; either unset: Exotel is off"
    )
    exotel_subdomain: str = "api.exotel.com"
    exotel_api_base_url: str | None = Field(None, description="tests: a local server speaking Exotel's API")


class ExotelStream(wire.StreamProtocol):
    """Exotel AgentStream JSON messages ↔ call events."""

    name = "exotel"
    sample_rate = 8000
    supports_marks = True

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})  # the applet URL's query (Exotel echoes it as custom_parameters too)
        self.stream_sid = ""
        self._check_order = wire.SequenceCheck("sequence_number")

    def parse(self, message: str | bytes) -> list[wire.Event]:
        data, event = wire.json_event(message, "Exotel stream messages")
        self._check_order(data)
        if event == "connected":
            return [wire.Info("connected")]
        if event == "start":
            if self.stream_sid:  # the stream is already named: another stream_sid must not take it over
                raise wire.WireError("a second start")
            return [self._start(data)]
        if not self.stream_sid:
            raise wire.WireError(f"{event[:32]} before start")
        if str(data.get("stream_sid", self.stream_sid)) != self.stream_sid:
            raise wire.WireError("message for another stream")
        return _in_stream(event, data)

    def _start(self, data: dict[str, Any]) -> wire.StreamStart:
        start = wire.member(data, "start")
        sid = str(start.get("stream_sid") or data.get("stream_sid") or "")
        if not sid:
            raise wire.WireError("start without stream_sid")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise wire.WireError("media_format is not an object")
        rate = str(fmt.get("sample_rate", "8000"))
        if rate not in ("8000", "16000"):
            raise wire.WireError(f"unsupported sample rate {rate[:10]!r}")
        self.sample_rate = int(rate)
        self.stream_sid = sid
        custom = start.get("custom_parameters") or {}
        params = {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}
        params.update(self.params)  # the URL Parley was reached at is what Parley trusts
        caller, called = str(start.get("from") or "") or None, str(start.get("to") or "") or None
        if params.get("call"):  # an outbound call: "from" is the number dialled
            caller, called = called, caller
        call_sid = str(start.get("call_sid") or "") or None
        return wire.StreamStart(stream_id=sid, provider_call_id=call_sid, caller=caller, called=called, params=params)

    def audio(self, pcm: bytes) -> list[wire.Outgoing]:
        payload = base64.b64encode(pcm).decode()
        return [json.dumps({"event": "media", "stream_sid": self.stream_sid, "media": {"payload": payload}})]

    def mark(self, name: str) -> wire.Outgoing | None:
        return json.dumps({"event": "mark", "stream_sid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> wire.Outgoing | None:
        return json.dumps({"event": "clear", "stream_sid": self.stream_sid})


def _in_stream(event: str, data: dict[str, Any]) -> list[wire.Event]:
    """The events of a message on a started stream."""
    if event == "media":
        return _media(data)
    if event == "dtmf":
        return [wire.dtmf(str(wire.member(data, "dtmf").get("digit", "")))]
    if event == "mark":
        name = wire.member(data, "mark").get("name")
        if not isinstance(name, str):
            raise wire.WireError("mark without a name")
        return [wire.MarkPlayed(name)]
    if event == "clear":
        return [wire.Info("clear")]
    if event == "stop":
        return [_stop(data)]
    raise wire.WireError(f"unknown event {event[:32]!r}")


def _media(data: dict[str, Any]) -> list[wire.Event]:
    pcm = wire.b64_payload(wire.member(data, "media").get("payload", ""))
    if len(pcm) % 2:
        raise wire.WireError(f"media payload of odd length {len(pcm)}")
    return [wire.Media(pcm)] if pcm else []


def _stop(data: dict[str, Any]) -> wire.Stop:
    """Exotel's own end of the call (no reason, or ``callended``) is the caller hanging up."""
    stop = data.get("stop")
    reason = str(stop.get("reason", "")) if isinstance(stop, dict) else ""
    return wire.Stop("caller-hangup" if reason in ("", "callended") else f"stream-{reason[:40]}")


# --- authentication -------------------------------------------------------------------------


def _credentials(settings: Settings) -> tuple[str, str] | None:
    own = settings.section(ExotelSettings)
    if not own.exotel_api_key or own.exotel_api_token is None:
        return None
    return own.exotel_api_key, own.exotel_api_token.get_secret_value()


def stream_auth_ok(settings: Settings, authorization: str) -> bool:
    """The stream's ``Authorization: Basic`` header names this account's API key and token (unset: nobody's)."""
    creds = _credentials(settings)
    return creds is not None and webhooks.basic_auth_ok(authorization, *creds)


def callback_token(settings: Settings, call_id: str) -> str | None:
    """Exotel does not sign callbacks: the status URL Parley hands out carries an HMAC of the call id, keyed by
    the API token. None when Exotel is not configured: no key, so no callback is believed."""
    creds = _credentials(settings)
    if creds is None or not creds[1]:
        return None
    text = f"exotel-status:{call_id}".encode("utf-8", "surrogatepass")
    return hmac.new(creds[1].encode(), text, hashlib.sha256).hexdigest()[:32]


# --- endpoints --------------------------------------------------------------------------------


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    if not stream_auth_ok(state.settings, ws.headers.get("authorization", "")):
        await webhooks.refuse_handshake(ws, "exotel_stream_bad_credentials", "invalid credentials")
        return
    await ws.accept()
    params = {k: v for k, v in ws.query_params.items() if k != "sample-rate"}
    await run_media_stream(ws, carriers.get("exotel"), ExotelStream(params), state)


@router.get("/status", operation_id="exotel_status_get")
@router.post("/status", operation_id="exotel_status_post")
async def status_callback(request: Request, state: State) -> Response:
    """Status callback of a dialled call: recorded as an event; a call that never connected is closed."""
    fields: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        body = await request.body()
        try:
            data = json.loads(body) if body.lstrip().startswith(b"{") else dict((await request.form()).items())
        except (ValueError, RecursionError):
            data = {}
        fields.update(data if isinstance(data, dict) else {})
    f = {k.lower(): str(v) for k, v in fields.items()}
    call_id = f.get("call", "")
    expected = callback_token(state.settings, call_id)
    if not call_id or expected is None or not webhooks.safe_equal(f.get("token", ""), expected):
        return Response(status_code=403)
    try:
        record_id = uuid.UUID(call_id)
    except ValueError:
        return Response(status_code=403)
    status = f.get("status") or f.get("callstatus") or ""
    sid = f.get("callsid") or f.get("call_sid") or ""
    duration = f.get("conversationduration")
    if not await webhooks.carrier_status(state, "exotel", sid, status, FAILED, record_id=record_id, duration=duration):
        log.info("exotel_status_unknown_call", status=status)
    return Response(status_code=204)


# --- outbound calls ---------------------------------------------------------------------------


def api_base(settings: Settings) -> str:
    own = settings.section(ExotelSettings)
    return (own.exotel_api_base_url or f"https://{own.exotel_subdomain}").rstrip("/")


@carriers.register
class Exotel(Carrier):
    """Exotel: the Voicebot applet's AgentStream WebSocket (HTTP Basic), status callbacks, the connect API."""

    name = "exotel"
    settings_model = ExotelSettings
    protocol = ExotelStream
    router = router

    async def dial(self, state: TelephonyState, call: Outbound) -> str:
        """Dial ``to`` and stream the answered call to Parley (AgentStream connect API). Returns the CallSid."""
        settings = state.settings
        creds, account_sid = _credentials(settings), settings.section(ExotelSettings).exotel_account_sid
        if creds is None or not account_sid:
            raise RuntimeError(
                "Exotel calls need PARLEY_EXOTEL_ACCOUNT_SID, PARLEY_EXOTEL_API_KEY and PARLEY_EXOTEL_API_TOKEN"
            )
        if not call.from_:
            raise ValueError("Exotel needs a 'from' number (your ExoPhone, shown as the caller id)")
        scheme, _, host = webhooks.ws_base(call.base).partition("://")
        userinfo = f"{quote(creds[0], safe='')}:{quote(creds[1], safe='')}@"
        status_query = urlencode(
            {"call": str(call.call_id), "token": callback_token(settings, str(call.call_id)) or ""}
        )
        form = [
            ("from", call.to),
            ("callerid", call.from_),
            ("streamtype", "bidirectional"),
            ("streamurl", f"{scheme}://{userinfo}{host}/telephony/exotel/stream?{call.query}"),
            ("statuscallback", f"{call.base}/telephony/exotel/status?{status_query}"),
            ("statuscallbackevents[]", "answered"),
            ("statuscallbackevents[]", "terminal"),
            ("customfield", str(call.call_id)),
        ]
        url = f"{api_base(settings)}/v1/accounts/{account_sid}/calls/connect"
        response = await shared_client("exotel").post(url, data=_multi(form), auth=creds)
        if response.status_code >= 400:
            raise RuntimeError(f"Exotel refused the call ({response.status_code}): {response.text[:200]}")
        try:
            data = response.json()
            made = data.get("call") or data.get("Call") or {}
            sid = made.get("sid") or made.get("Sid")
        except (ValueError, AttributeError):
            sid = None
        if not isinstance(sid, str) or not sid:
            raise RuntimeError("Exotel did not return the call's sid")
        return sid


def _multi(pairs: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Form fields, a repeated name as a list (httpx sends each value)."""
    out: dict[str, str | list[str]] = {}
    for k, v in pairs:
        if k in out:
            prev = out[k]
            out[k] = [*prev, v] if isinstance(prev, list) else [prev, v]
        else:
            out[k] = v
    return out

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
import binascii
import hashlib
import hmac
import json
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import structlog
from fastapi import APIRouter, Depends, Request, Response, WebSocket

from parley.api.deps import State
from parley.api.state import AppState
from parley.calls.live import CallTarget
from parley.config import Settings
from parley.store.calls import CallRepo
from parley.telephony.outbound import record_carrier_status
from parley.telephony.stream import (
    Dtmf,
    Event,
    Info,
    MarkPlayed,
    Media,
    Outgoing,
    SequenceCheck,
    Stop,
    StreamProtocol,
    StreamStart,
    WireError,
    json_event,
    member,
    run_media_stream,
)
from parley.telephony.webhooks import carrier_configured, public_url, safe_equal, source_limit, ws_base

log = structlog.get_logger(__name__)
router = APIRouter(
    prefix="/telephony/exotel", tags=["telephony"],
    dependencies=[Depends(source_limit), Depends(carrier_configured("exotel"))],
)  # fmt: skip

FAILED = {"busy", "failed", "no-answer", "canceled", "cancelled"}
DIGITS = "0123456789*#ABCD"


class ExotelStream(StreamProtocol):
    """Exotel AgentStream JSON messages ↔ call events."""

    name = "exotel"
    sample_rate = 8000
    supports_marks = True

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})  # the applet URL's query (Exotel echoes it as custom_parameters too)
        self.stream_sid = ""
        self._check_order = SequenceCheck("sequence_number")

    def parse(self, message: str | bytes) -> list[Event]:
        data, event = json_event(message, "Exotel stream messages")
        self._check_order(data)
        if event == "connected":
            return [Info("connected")]
        if event == "start":
            if self.stream_sid:  # the stream is already named: another stream_sid must not take it over
                raise WireError("a second start")
            return [self._start(data)]
        if not self.stream_sid:
            raise WireError(f"{event[:32]} before start")
        if str(data.get("stream_sid", self.stream_sid)) != self.stream_sid:
            raise WireError("message for another stream")
        if event == "media":
            payload = member(data, "media").get("payload", "")
            try:
                pcm = base64.b64decode(payload if isinstance(payload, str) else "?", validate=True)
            except (binascii.Error, ValueError):
                raise WireError("media payload is not base64") from None
            if len(pcm) % 2:
                raise WireError(f"media payload of odd length {len(pcm)}")
            return [Media(pcm)] if pcm else []
        if event == "dtmf":
            digit = str(member(data, "dtmf").get("digit", ""))
            if len(digit) != 1 or digit not in DIGITS:
                raise WireError(f"bad DTMF digit {digit[:8]!r}")
            return [Dtmf(digit)]
        if event == "mark":
            name = member(data, "mark").get("name")
            if not isinstance(name, str):
                raise WireError("mark without a name")
            return [MarkPlayed(name)]
        if event == "clear":
            return [Info("clear")]
        if event == "stop":
            stop = data.get("stop")
            reason = str(stop.get("reason", "")) if isinstance(stop, dict) else ""
            return [Stop("caller-hangup" if reason in ("", "callended") else f"stream-{reason[:40]}")]
        raise WireError(f"unknown event {event[:32]!r}")

    def _start(self, data: dict[str, Any]) -> StreamStart:
        start = member(data, "start")
        sid = str(start.get("stream_sid") or data.get("stream_sid") or "")
        if not sid:
            raise WireError("start without stream_sid")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise WireError("media_format is not an object")
        rate = str(fmt.get("sample_rate", "8000"))
        if rate not in ("8000", "16000"):
            raise WireError(f"unsupported sample rate {rate[:10]!r}")
        self.sample_rate = int(rate)
        self.stream_sid = sid
        custom = start.get("custom_parameters") or {}
        params = {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}
        params.update(self.params)  # the URL Parley was reached at is what Parley trusts
        caller, called = str(start.get("from") or "") or None, str(start.get("to") or "") or None
        if params.get("call"):  # an outbound call: "from" is the number dialled
            caller, called = called, caller
        return StreamStart(
            stream_id=sid, provider_call_id=str(start.get("call_sid") or "") or None, caller=caller, called=called,
            params=params,
        )  # fmt: skip

    def audio(self, pcm: bytes) -> list[Outgoing]:
        payload = base64.b64encode(pcm).decode()
        return [json.dumps({"event": "media", "stream_sid": self.stream_sid, "media": {"payload": payload}})]

    def mark(self, name: str) -> Outgoing | None:
        return json.dumps({"event": "mark", "stream_sid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> Outgoing | None:
        return json.dumps({"event": "clear", "stream_sid": self.stream_sid})


# --- authentication -------------------------------------------------------------------------


def _credentials(settings: Settings) -> tuple[str, str] | None:
    if not settings.exotel_api_key or settings.exotel_api_token is None:
        return None
    return settings.exotel_api_key, settings.exotel_api_token.get_secret_value()


def basic_auth_ok(settings: Settings, authorization: str) -> bool:
    """The stream's ``Authorization: Basic`` header names this account's API key and token (unset: nobody's)."""
    creds = _credentials(settings)
    if creds is None or not creds[1]:
        return False
    scheme, _, value = authorization.partition(" ")
    try:
        given = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        return False
    return scheme.lower() == "basic" and safe_equal(given, f"{creds[0]}:{creds[1]}")


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
    if not basic_auth_ok(state.settings, ws.headers.get("authorization", "")):
        log.warning("exotel_stream_bad_credentials")
        await ws.close(code=1008, reason="invalid credentials")  # before accept: the handshake gets a 403
        return
    await ws.accept()
    params = {k: v for k, v in ws.query_params.items() if k != "sample-rate"}
    await run_media_stream(ws, ExotelStream(params), state)


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
    if not call_id or expected is None or not safe_equal(f.get("token", ""), expected):
        return Response(status_code=403)
    try:
        record_id = uuid.UUID(call_id)
    except ValueError:
        return Response(status_code=403)
    status = f.get("status") or f.get("callstatus") or ""
    async with state.db.session() as s:
        repo = CallRepo(s)
        call = await repo.by_provider_id("exotel", f.get("callsid") or f.get("call_sid") or "")
        if call is None or call.id != record_id:
            log.info("exotel_status_unknown_call", status=status)
            return Response(status_code=204)
        await record_carrier_status(repo, call, status, FAILED, duration=f.get("conversationduration"))
    return Response(status_code=204)


# --- outbound calls ---------------------------------------------------------------------------


def api_base(settings: Settings) -> str:
    return (settings.exotel_api_base_url or f"https://{settings.exotel_subdomain}").rstrip("/")


async def dial(
    state: AppState, target: CallTarget, call_id: uuid.UUID, to: str, from_: str | None, base_url: str
) -> str:
    """Dial ``to`` and stream the answered call to Parley (AgentStream connect API). Returns the CallSid."""
    settings = state.settings
    creds = _credentials(settings)
    if creds is None or not settings.exotel_account_sid:
        raise RuntimeError(
            "Exotel calls need PARLEY_EXOTEL_ACCOUNT_SID, PARLEY_EXOTEL_API_KEY and PARLEY_EXOTEL_API_TOKEN"
        )
    if not from_:
        raise ValueError("Exotel needs a 'from' number (your ExoPhone, shown as the caller id)")
    base = public_url(settings, base_url)
    scheme, _, host = ws_base(base).partition("://")
    query = urlencode({"agent": str(target.agent_id), "tenant": str(target.tenant_id), "call": str(call_id)})
    userinfo = f"{quote(creds[0], safe='')}:{quote(creds[1], safe='')}@"
    status_query = urlencode({"call": str(call_id), "token": callback_token(settings, str(call_id)) or ""})
    form = [
        ("from", to), ("callerid", from_), ("streamtype", "bidirectional"),
        ("streamurl", f"{scheme}://{userinfo}{host}/telephony/exotel/stream?{query}"),
        ("statuscallback", f"{base}/telephony/exotel/status?{status_query}"),
        ("statuscallbackevents[]", "answered"), ("statuscallbackevents[]", "terminal"),
        ("customfield", str(call_id)),
    ]  # fmt: skip
    url = f"{api_base(settings)}/v1/accounts/{settings.exotel_account_sid}/calls/connect"
    async with httpx.AsyncClient(timeout=15) as client:
        response = await client.post(url, data=_multi(form), auth=creds)
    if response.status_code >= 400:
        raise RuntimeError(f"Exotel refused the call ({response.status_code}): {response.text[:200]}")
    try:
        data = response.json()
        call = data.get("call") or data.get("Call") or {}
        sid = call.get("sid") or call.get("Sid")
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

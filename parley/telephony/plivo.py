"""Plivo: answer URL (XML ``<Stream>``), hangup callback, Audio Streaming WebSocket, outbound calls, transfer.

Wire format (plivo.com/docs/voice/audio-streaming): Plivo sends JSON ``start``
(``callId``, ``streamId``, ``mediaFormat``), ``media`` (base64 µ-law 8 kHz, the
``contentType`` the XML asks for), ``dtmf``, ``playedStream`` (a checkpoint was
played) and ``clearedAudio``; Parley sends ``playAudio``, ``checkpoint`` and
``clearAudio``. Webhooks are checked against ``X-Plivo-Signature-V3`` (HMAC-SHA256
of the URL, the sorted POST parameters and the nonce, keyed by the auth token,
``PARLEY_PLIVO_AUTH_TOKEN``: until it is set, Plivo is off); the stream URL carries an
HMAC of its parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.sax.saxutils import escape, quoteattr

import structlog
from fastapi import HTTPException, Request, Response, WebSocket
from pydantic import Field, SecretStr

from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16
from parley.config import Settings
from parley.net.clients import shared_client
from parley.telephony import amd, webhooks, wire
from parley.telephony.carrier import Carrier, CarrierSettings, Outbound, carriers
from parley.telephony.state import State, TelephonyState
from parley.telephony.stream import run_media_stream

log = structlog.get_logger(__name__)
router = webhooks.carrier_router("plivo")

CONTENT_TYPE = "audio/x-mulaw;rate=8000"
#: CallStatus values of a call that never connected
FAILED = {"busy", "failed", "timeout", "no-answer", "cancel", "canceled", "cancelled", "rejected"}
NONCE_TTL_S = 24 * 3600  # how long a used X-Plivo-Signature-V3-Nonce is remembered
TRANSFER_TARGET = re.compile(r"\+?\d{2,20}|sip:[\w.!~*'()&=+$,;?/%:@-]{1,200}")


class PlivoSettings(CarrierSettings):
    credentials = ("plivo_auth_token",)

    plivo_auth_id: str | None = None
    plivo_auth_token: SecretStr | None = Field(None, description="checks Plivo's signatures; unset: Plivo is off")
    plivo_api_base_url: str = "https://api.plivo.com"


class PlivoStream(wire.StreamProtocol):
    """Plivo Audio Streaming JSON messages ↔ call events."""

    name = "plivo"
    sample_rate = 8000
    supports_marks = True

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})  # the stream URL's query: who the call is for (signed)
        self.stream_id = ""
        self._check_order = wire.SequenceCheck("sequenceNumber")

    def parse(self, message: str | bytes) -> list[wire.Event]:
        data, event = wire.json_event(message, "Plivo stream messages")
        self._check_order(data)
        if event == "start":
            if self.stream_id:  # the stream is already named: another streamId must not take it over
                raise wire.WireError("a second start")
            return [self._start(data)]
        if not self.stream_id:
            raise wire.WireError(f"{event[:32]} before start")
        if data.get("streamId", self.stream_id) != self.stream_id:
            raise wire.WireError("message for another stream")
        if event == "media":
            media = wire.member(data, "media")
            if media.get("track", "inbound") != "inbound":
                return []
            raw = wire.b64_payload(media.get("payload", ""))
            return [wire.Media(ulaw_to_pcm16(raw))] if raw else []
        if event == "dtmf":
            return [wire.dtmf(str(wire.member(data, "dtmf").get("digit", "")))]
        if event == "playedStream":
            name = data.get("name")
            if not isinstance(name, str):
                raise wire.WireError("playedStream without a name")
            return [wire.MarkPlayed(name)]
        if event == "clearedAudio":
            return [wire.Info("clearedAudio")]
        if event == "stop":
            return [wire.Stop("caller-hangup")]
        raise wire.WireError(f"unknown event {event[:32]!r}")

    def _start(self, data: dict[str, Any]) -> wire.StreamStart:
        start = wire.member(data, "start")
        sid = str(start.get("streamId") or data.get("streamId") or "")
        if not sid:
            raise wire.WireError("start without streamId")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict) or fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw":
            raise wire.WireError(f"unsupported media format {str(fmt)[:60]}")
        self.stream_id = sid
        p = self.params
        return wire.StreamStart(
            stream_id=sid,
            provider_call_id=str(start.get("callId") or p.get("call_uuid") or "") or None,
            caller=p.get("caller") or None,
            called=p.get("called") or None,
            params=dict(p),
        )

    def audio(self, pcm: bytes) -> list[wire.Outgoing]:
        payload = base64.b64encode(pcm16_to_ulaw(pcm)).decode()
        media = {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": payload}
        return [json.dumps({"event": "playAudio", "media": media})]

    def mark(self, name: str) -> wire.Outgoing | None:
        return json.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    def clear(self) -> wire.Outgoing | None:
        return json.dumps({"event": "clearAudio", "streamId": self.stream_id})


# --- signatures -----------------------------------------------------------------------------


def signature_v3(auth_token: str, method: str, url: str, params: dict[str, str], nonce: str) -> str:
    """X-Plivo-Signature-V3: the URL (query sorted), then for POST the sorted parameters as name+value, then
    ``.`` and the nonce; HMAC-SHA256 keyed by the auth token, base64."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    if method.upper() == "GET":
        query = sorted(query + list(params.items()))
        text = base + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
    else:
        text = base
        if query or params:
            text += "?" + "&".join(f"{k}={v}" for k, v in query)
        if query and params:
            text += "."
        text += "".join(f"{k}{v}" for k, v in sorted(params.items()))
    digest = hmac.new(auth_token.encode(), f"{text}.{nonce}".encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _auth_token(settings: Settings) -> str:
    """The key of Plivo's signatures and of ours (the router refuses everything before this while it is unset)."""
    own = settings.section(PlivoSettings).plivo_auth_token
    token = own.get_secret_value() if own is not None else ""
    if not token:
        raise HTTPException(status_code=403, detail="Plivo is not configured (PARLEY_PLIVO_AUTH_TOKEN)")
    return token


async def verified_params(request: Request, state: TelephonyState) -> dict[str, str]:
    """The webhook's parameters, once X-Plivo-Signature-V3 has been checked with the auth token."""
    form = {k: str(v) for k, v in (await request.form()).items()} if request.method == "POST" else {}
    url = webhooks.public_url(state.settings, str(request.base_url)) + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    nonce = request.headers.get("x-plivo-signature-v3-nonce", "")
    given = request.headers.get("x-plivo-signature-v3", "")
    expected = signature_v3(_auth_token(state.settings), request.method, url, form, nonce)
    if not nonce or not any(webhooks.safe_equal(s.strip(), expected) for s in given.split(",")):
        log.warning("plivo_bad_signature", path=request.url.path)
        raise HTTPException(status_code=403, detail="invalid X-Plivo-Signature-V3")
    # V3 has no timestamp: the nonce is what makes a captured request worthless (used once, kept a day)
    if not await state.nonces.use(f"plivo-nonce:{nonce}", NONCE_TTL_S):
        log.warning("plivo_replayed_nonce", path=request.url.path)
        raise HTTPException(status_code=403, detail="X-Plivo-Signature-V3-Nonce was already used")
    return {**dict(request.query_params), **form}


def _xml(body: str, status: int = 200) -> Response:
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{body}</Response>',
        status_code=status,
        media_type="application/xml",
    )


# --- webhooks ---------------------------------------------------------------------------------


@router.get("/answer", operation_id="plivo_answer_get")
@router.post("/answer", operation_id="plivo_answer_post")
async def answer(request: Request, state: State) -> Response:
    """A call arrived (or a dialled call was answered): stream it to the agent, both ways."""
    p = await verified_params(request, state)
    secret = _auth_token(state.settings)
    answered = await webhooks.signed_answer(
        state, "plivo", secret, p, (p.get("From"), p.get("To")), "call_uuid", p.get("CallUUID", "")
    )
    if answered is None:
        return _xml("<Speak>Sorry, this number is not in service.</Speak><Hangup/>", status=404)
    target, params = answered
    base = webhooks.public_url(state.settings, str(request.base_url))
    url = f"{webhooks.ws_base(base)}/telephony/plivo/stream?{urlencode(params)}"
    attrs = (
        f'bidirectional="true" keepCallAlive="true" contentType="{CONTENT_TYPE}" '
        f"statusCallbackUrl={quoteattr(base + '/telephony/plivo/status')}"
    )
    log.info("plivo_call", call_uuid=p.get("CallUUID"), agent=target.agent_name)
    return _xml(f"<Stream {attrs}>{escape(url)}</Stream>")


@router.get("/status", operation_id="plivo_status_get")
@router.post("/status", operation_id="plivo_status_post")
async def status_callback(request: Request, state: State) -> Response:
    """Hangup and stream callbacks: every status is a call event; a dialled call that failed is closed."""
    p = await verified_params(request, state)
    status = p.get("CallStatus") or p.get("Event") or ""
    cause, duration = p.get("HangupCause"), p.get("Duration")
    if p.get("Machine"):  # machine detection's result, posted to its machine_detection_url (this route)
        for key in ("CallUUID", "RequestUUID"):
            if await amd.record_by_provider_id(state.db, "plivo", p.get(key, ""), p["Machine"]):
                break
        if not status:
            return Response(status_code=204)
    for key in ("RequestUUID", "CallUUID"):  # a dialled call is known by its request uuid until it is answered
        if await webhooks.carrier_status(
            state, "plivo", p.get(key, ""), status, FAILED, cause=cause, duration=duration
        ):
            return Response(status_code=204)
    log.info("plivo_status_unknown_call", call_uuid=p.get("CallUUID"), status=status)
    return Response(status_code=204)


@router.get("/transfer", operation_id="plivo_transfer_get")
@router.post("/transfer", operation_id="plivo_transfer_post")
async def transfer_xml(request: Request, state: State) -> Response:
    """The XML a transferred call fetches: dial ``to`` (Plivo signs the URL, so ``to`` is ours)."""
    p = await verified_params(request, state)
    to = p.get("to", "")
    if not TRANSFER_TARGET.fullmatch(to):
        raise HTTPException(status_code=400, detail="'to' must be a phone number or a sip: URI")
    inner = f"<User>{escape(to)}</User>" if to.startswith("sip:") else f"<Number>{escape(to.lstrip('+'))}</Number>"
    return _xml(f"<Dial>{inner}</Dial>")


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    find_target = webhooks.signed_stream_target(state, _auth_token(state.settings))
    await ws.accept()
    await run_media_stream(ws, carriers.get("plivo"), PlivoStream(dict(ws.query_params)), state, find_target)


# --- REST API: outbound calls and call transfer ------------------------------------------


async def api_request(settings: Settings, path: str, body: dict[str, Any]) -> dict[str, Any]:
    own = settings.section(PlivoSettings)
    if not own.plivo_auth_id or own.plivo_auth_token is None:
        raise RuntimeError("Plivo calls need PARLEY_PLIVO_AUTH_ID and PARLEY_PLIVO_AUTH_TOKEN")
    url = f"{own.plivo_api_base_url.rstrip('/')}/v1/Account/{own.plivo_auth_id}{path}"
    auth = (own.plivo_auth_id, own.plivo_auth_token.get_secret_value())
    response = await shared_client("plivo").post(url, json=body, auth=auth)
    if response.status_code >= 400:
        try:
            text = str(response.json().get("error", ""))[:200]
        except (ValueError, AttributeError):
            text = response.text[:200]
        raise RuntimeError(f"Plivo refused the request ({response.status_code}): {text}")
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@carriers.register
class Plivo(Carrier):
    """Plivo Voice: XML webhooks signed with V3 signatures, bidirectional Audio Streaming, the REST API."""

    name = "plivo"
    settings_model = PlivoSettings
    protocol = PlivoStream
    router = router

    async def dial(self, state: TelephonyState, call: Outbound) -> str:
        """Start an outbound call; Plivo fetches the answer URL when it is answered. Returns the request uuid."""
        if not call.from_:
            raise ValueError("Plivo needs a 'from' number (one of your Plivo numbers)")
        body = {
            "from": call.from_.lstrip("+"),
            "to": call.to if call.to.startswith("sip:") else call.to.lstrip("+"),
            "answer_url": f"{call.base}/telephony/plivo/answer?{call.query}",
            "answer_method": "POST",
            "hangup_url": f"{call.base}/telephony/plivo/status",
            "hangup_method": "POST",
            **(amd.plivo_params(f"{call.base}/telephony/plivo/status") if call.machine_detection else {}),
        }
        created = await api_request(state.settings, "/Call/", body)
        request_uuid = created.get("request_uuid")
        if isinstance(request_uuid, list):  # a call to several numbers answers with a list
            request_uuid = request_uuid[0] if request_uuid else None
        if not isinstance(request_uuid, str) or not request_uuid:
            raise RuntimeError("Plivo did not return the call's request_uuid")
        return request_uuid

    async def transfer(self, state: TelephonyState, call_id: str, to: str, base_url: str) -> None:
        """The live call's A leg fetches our transfer XML, which dials ``to``."""
        base = webhooks.public_url(state.settings, base_url)
        body = {
            "legs": "aleg",
            "aleg_url": f"{base}/telephony/plivo/transfer?{urlencode({'to': to})}",
            "aleg_method": "POST",
        }
        await api_request(state.settings, f"/Call/{call_id}/", body)

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
import binascii
import hashlib
import hmac
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.sax.saxutils import escape, quoteattr

import httpx
import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response, WebSocket

from parley.api.deps import State
from parley.api.state import AppState
from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16
from parley.calls.live import CallTarget
from parley.config import Settings
from parley.store.calls import CallRepo
from parley.telephony.outbound import record_carrier_status
from parley.telephony.routing import NoSuchAgent
from parley.telephony.stream import (
    Dtmf,
    Event,
    Info,
    MarkPlayed,
    Media,
    Outgoing,
    SequenceCheck,
    Stop,
    StreamControl,
    StreamProtocol,
    StreamStart,
    WireError,
    json_event,
    member,
    run_media_stream,
)
from parley.telephony.webhooks import (
    answer_target,
    carrier_configured,
    public_url,
    safe_equal,
    sign_stream,
    signed_stream_target,
    source_limit,
    ws_base,
)

log = structlog.get_logger(__name__)
router = APIRouter(
    prefix="/telephony/plivo", tags=["telephony"],
    dependencies=[Depends(source_limit), Depends(carrier_configured("plivo"))],
)  # fmt: skip

CONTENT_TYPE = "audio/x-mulaw;rate=8000"
#: CallStatus values of a call that never connected
FAILED = {"busy", "failed", "timeout", "no-answer", "cancel", "canceled", "cancelled", "rejected"}
DIGITS = "0123456789*#ABCD"
NONCE_TTL_S = 24 * 3600  # how long a used X-Plivo-Signature-V3-Nonce is remembered
TRANSFER_TARGET = re.compile(r"\+?\d{2,20}|sip:[\w.!~*'()&=+$,;?/%:@-]{1,200}")


class PlivoStream(StreamProtocol):
    """Plivo Audio Streaming JSON messages ↔ call events."""

    name = "plivo"
    sample_rate = 8000
    supports_marks = True

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})  # the stream URL's query: who the call is for (signed)
        self.stream_id = ""
        self._check_order = SequenceCheck("sequenceNumber")

    def parse(self, message: str | bytes) -> list[Event]:
        data, event = json_event(message, "Plivo stream messages")
        self._check_order(data)
        if event == "start":
            if self.stream_id:  # the stream is already named: another streamId must not take it over
                raise WireError("a second start")
            return [self._start(data)]
        if not self.stream_id:
            raise WireError(f"{event[:32]} before start")
        if data.get("streamId", self.stream_id) != self.stream_id:
            raise WireError("message for another stream")
        if event == "media":
            media = member(data, "media")
            if media.get("track", "inbound") != "inbound":
                return []
            payload = media.get("payload", "")
            try:
                raw = base64.b64decode(payload if isinstance(payload, str) else "?", validate=True)
            except (binascii.Error, ValueError):
                raise WireError("media payload is not base64") from None
            return [Media(ulaw_to_pcm16(raw))] if raw else []
        if event == "dtmf":
            digit = str(member(data, "dtmf").get("digit", ""))
            if len(digit) != 1 or digit not in DIGITS:
                raise WireError(f"bad DTMF digit {digit[:8]!r}")
            return [Dtmf(digit)]
        if event == "playedStream":
            name = data.get("name")
            if not isinstance(name, str):
                raise WireError("playedStream without a name")
            return [MarkPlayed(name)]
        if event == "clearedAudio":
            return [Info("clearedAudio")]
        if event == "stop":
            return [Stop("caller-hangup")]
        raise WireError(f"unknown event {event[:32]!r}")

    def _start(self, data: dict[str, Any]) -> StreamStart:
        start = member(data, "start")
        sid = str(start.get("streamId") or data.get("streamId") or "")
        if not sid:
            raise WireError("start without streamId")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict) or fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw":
            raise WireError(f"unsupported media format {str(fmt)[:60]}")
        self.stream_id = sid
        p = self.params
        return StreamStart(
            stream_id=sid, provider_call_id=str(start.get("callId") or p.get("call_uuid") or "") or None,
            caller=p.get("caller") or None, called=p.get("called") or None, params=dict(p),
        )  # fmt: skip

    def audio(self, pcm: bytes) -> list[Outgoing]:
        payload = base64.b64encode(pcm16_to_ulaw(pcm)).decode()
        media = {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": payload}
        return [json.dumps({"event": "playAudio", "media": media})]

    def mark(self, name: str) -> Outgoing | None:
        return json.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    def clear(self) -> Outgoing | None:
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
    token = settings.plivo_auth_token.get_secret_value() if settings.plivo_auth_token is not None else ""
    if not token:
        raise HTTPException(status_code=403, detail="Plivo is not configured (PARLEY_PLIVO_AUTH_TOKEN)")
    return token


async def verified_params(request: Request) -> dict[str, str]:
    """The webhook's parameters, once X-Plivo-Signature-V3 has been checked with the auth token."""
    state: AppState = request.app.state.parley
    form = {k: str(v) for k, v in (await request.form()).items()} if request.method == "POST" else {}
    url = public_url(state.settings, str(request.base_url)) + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    nonce = request.headers.get("x-plivo-signature-v3-nonce", "")
    given = request.headers.get("x-plivo-signature-v3", "")
    expected = signature_v3(_auth_token(state.settings), request.method, url, form, nonce)
    if not nonce or not any(safe_equal(s.strip(), expected) for s in given.split(",")):
        log.warning("plivo_bad_signature", path=request.url.path)
        raise HTTPException(status_code=403, detail="invalid X-Plivo-Signature-V3")
    # V3 has no timestamp: the nonce is what makes a captured request worthless (used once, kept a day)
    if not await state.nonces.use(f"plivo-nonce:{nonce}", NONCE_TTL_S):
        log.warning("plivo_replayed_nonce", path=request.url.path)
        raise HTTPException(status_code=403, detail="X-Plivo-Signature-V3-Nonce was already used")
    return {**dict(request.query_params), **form}


def _xml(body: str, status: int = 200) -> Response:
    return Response(f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{body}</Response>', status_code=status,
                    media_type="application/xml")  # fmt: skip


# --- webhooks ---------------------------------------------------------------------------------


@router.get("/answer", operation_id="plivo_answer_get")
@router.post("/answer", operation_id="plivo_answer_post")
async def answer(request: Request, state: State) -> Response:
    """A call arrived (or a dialled call was answered): stream it to the agent, both ways."""
    p = await verified_params(request)
    try:
        target, params = await answer_target(
            state.db, state.settings, p, p.get("From"), p.get("To"), "call_uuid", p.get("CallUUID", "")
        )
    except NoSuchAgent as exc:
        log.warning("plivo_unknown_agent", error=str(exc))
        return _xml("<Speak>Sorry, this number is not in service.</Speak><Hangup/>", status=404)
    base = public_url(state.settings, str(request.base_url))
    params = sign_stream(_auth_token(state.settings), params, state.settings.telephony_signature_ttl_s)
    url = f"{ws_base(base)}/telephony/plivo/stream?{urlencode(params)}"
    attrs = (f'bidirectional="true" keepCallAlive="true" contentType="{CONTENT_TYPE}" '
             f"statusCallbackUrl={quoteattr(base + '/telephony/plivo/status')}")  # fmt: skip
    log.info("plivo_call", call_uuid=p.get("CallUUID"), agent=target.agent_name)
    return _xml(f"<Stream {attrs}>{escape(url)}</Stream>")


@router.get("/status", operation_id="plivo_status_get")
@router.post("/status", operation_id="plivo_status_post")
async def status_callback(request: Request, state: State) -> Response:
    """Hangup and stream callbacks: every status is a call event; a dialled call that failed is closed."""
    p = await verified_params(request)
    status = p.get("CallStatus") or p.get("Event") or ""
    async with state.db.session() as s:
        repo = CallRepo(s)
        call = None
        for key in ("RequestUUID", "CallUUID"):
            if p.get(key) and call is None:
                call = await repo.by_provider_id("plivo", p[key])
        if call is None:
            log.info("plivo_status_unknown_call", call_uuid=p.get("CallUUID"), status=status)
            return Response(status_code=204)
        await record_carrier_status(repo, call, status, FAILED, cause=p.get("HangupCause"), duration=p.get("Duration"))
    return Response(status_code=204)


@router.get("/transfer", operation_id="plivo_transfer_get")
@router.post("/transfer", operation_id="plivo_transfer_post")
async def transfer_xml(request: Request) -> Response:
    """The XML a transferred call fetches: dial ``to`` (Plivo signs the URL, so ``to`` is ours)."""
    p = await verified_params(request)
    to = p.get("to", "")
    if not TRANSFER_TARGET.fullmatch(to):
        raise HTTPException(status_code=400, detail="'to' must be a phone number or a sip: URI")
    inner = f"<User>{escape(to)}</User>" if to.startswith("sip:") else f"<Number>{escape(to.lstrip('+'))}</Number>"
    return _xml(f"<Dial>{inner}</Dial>")


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    settings = state.settings
    find_target = signed_stream_target(state, _auth_token(settings))
    await ws.accept()

    def setup(control: StreamControl, start: StreamStart, target: CallTarget) -> None:
        call_uuid = start.provider_call_id
        base = public_url(settings, f"http://{ws.url.netloc}")

        async def transfer(to: str) -> None:
            if not call_uuid:
                raise RuntimeError("the stream did not name its call")
            body = {"legs": "aleg", "aleg_url": f"{base}/telephony/plivo/transfer?{urlencode({'to': to})}",
                    "aleg_method": "POST"}  # fmt: skip
            await api_request(settings, f"/Call/{call_uuid}/", body)

        control.transfer_to = transfer

    await run_media_stream(ws, PlivoStream(dict(ws.query_params)), state, find_target=find_target, setup_control=setup)


# --- REST API: outbound calls and call transfer ------------------------------------------


async def api_request(settings: Settings, path: str, body: dict[str, Any]) -> dict[str, Any]:
    if not settings.plivo_auth_id or settings.plivo_auth_token is None:
        raise RuntimeError("Plivo calls need PARLEY_PLIVO_AUTH_ID and PARLEY_PLIVO_AUTH_TOKEN")
    url = f"{settings.plivo_api_base_url.rstrip('/')}/v1/Account/{settings.plivo_auth_id}{path}"
    auth = (settings.plivo_auth_id, settings.plivo_auth_token.get_secret_value())
    async with httpx.AsyncClient(timeout=15) as client:
        response = await client.post(url, json=body, auth=auth)
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


async def dial(
    state: AppState, target: CallTarget, call_id: uuid.UUID, to: str, from_: str | None, base_url: str
) -> str:
    """Start an outbound call; Plivo fetches the answer URL when it is answered. Returns the request uuid."""
    if not from_:
        raise ValueError("Plivo needs a 'from' number (one of your Plivo numbers)")
    base = public_url(state.settings, base_url)
    query = urlencode({"agent": str(target.agent_id), "tenant": str(target.tenant_id), "call": str(call_id)})
    body = {"from": from_.lstrip("+"), "to": to if to.startswith("sip:") else to.lstrip("+"),
            "answer_url": f"{base}/telephony/plivo/answer?{query}", "answer_method": "POST",
            "hangup_url": f"{base}/telephony/plivo/status", "hangup_method": "POST"}  # fmt: skip
    created = await api_request(state.settings, "/Call/", body)
    request_uuid = created.get("request_uuid")
    if isinstance(request_uuid, list):  # a call to several numbers answers with a list
        request_uuid = request_uuid[0] if request_uuid else None
    if not isinstance(request_uuid, str) or not request_uuid:
        raise RuntimeError("Plivo did not return the call's request_uuid")
    return request_uuid

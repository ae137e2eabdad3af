"""Twilio: voice webhook (TwiML ``<Connect><Stream>``), Media Streams, status callbacks, outbound calls.

Wire format (Media Streams, bidirectional): Twilio sends ``connected``, ``start``,
``media`` (base64 µ-law 8 kHz), ``dtmf``, ``mark`` and ``stop``; Parley sends only
``media``, ``mark`` and ``clear`` (anything else is error 31924). Webhooks are
checked with the SDK's ``RequestValidator`` against ``PARLEY_PUBLIC_URL``; the
stream cannot carry query parameters, so the TwiML passes ``<Parameter>``s and an
HMAC over them (keyed by the auth token) that the stream checks at ``start``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response, WebSocket
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

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
    sign_stream,
    signed_stream_target,
    source_limit,
    ws_base,
)

log = structlog.get_logger(__name__)
router = APIRouter(
    prefix="/telephony/twilio", tags=["telephony"],
    dependencies=[Depends(source_limit), Depends(carrier_configured("twilio"))],
)  # fmt: skip

#: CallStatus values that mean the call never connected or has ended
FAILED = {"busy", "failed", "no-answer", "canceled"}
ANSWERED_TTL_S = 24 * 3600  # how long a CallSid whose voice webhook was answered is remembered


class TwilioStream(StreamProtocol):
    """Twilio Media Streams JSON messages ↔ call events."""

    name = "twilio"
    sample_rate = 8000
    supports_marks = True

    def __init__(self) -> None:
        self.stream_sid = ""
        self._check_order = SequenceCheck("sequenceNumber")

    def parse(self, message: str | bytes) -> list[Event]:
        data, event = json_event(message, "Media Streams messages")
        self._check_order(data)
        if event == "connected":
            return [Info(f"connected protocol={data.get('protocol')} version={data.get('version')}")]
        if event == "start":
            if self.stream_sid:  # the stream is already named: another streamSid must not take it over
                raise WireError("a second start")
            return [self._start(data)]
        if not self.stream_sid:
            raise WireError(f"{event} before start")
        if data.get("streamSid", self.stream_sid) != self.stream_sid:
            raise WireError("message for another stream")
        if event == "media":
            media = member(data, "media")
            if media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return []
            try:
                payload = base64.b64decode(str(media.get("payload", "")), validate=True)
            except (binascii.Error, ValueError):
                raise WireError("media payload is not base64") from None
            return [Media(ulaw_to_pcm16(payload))] if payload else []
        if event == "dtmf":
            digit = str(member(data, "dtmf").get("digit", ""))
            if len(digit) != 1 or digit not in "0123456789*#ABCD":
                raise WireError(f"bad DTMF digit {digit[:8]!r}")
            return [Dtmf(digit)]
        if event == "mark":
            return [MarkPlayed(str(member(data, "mark").get("name", "")))]
        if event == "stop":
            return [Stop("caller-hangup")]
        raise WireError(f"unknown event {event[:32]!r}")

    def _start(self, data: dict[str, Any]) -> StreamStart:
        start = member(data, "start")
        sid = str(data.get("streamSid") or start.get("streamSid") or "")
        if not sid:
            raise WireError("start without streamSid")
        fmt = start.get("mediaFormat") or {}
        if isinstance(fmt, dict) and fmt.get("encoding") not in (None, "audio/x-mulaw"):
            raise WireError(f"unsupported encoding {fmt.get('encoding')!r}")
        self.stream_sid = sid
        params = start.get("customParameters") or {}
        params = {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}
        return StreamStart(
            stream_id=sid, provider_call_id=str(start.get("callSid") or "") or None,
            caller=params.get("caller"), called=params.get("called"), params=params,
        )  # fmt: skip

    def audio(self, pcm: bytes) -> list[Outgoing]:
        payload = base64.b64encode(pcm16_to_ulaw(pcm)).decode()
        return [json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})]

    def mark(self, name: str) -> Outgoing | None:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> Outgoing | None:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})


# --- configuration helpers ------------------------------------------------------------


def _auth_token(settings: Settings) -> str:
    if settings.twilio_auth_token is None or not settings.twilio_auth_token.get_secret_value():
        raise HTTPException(status_code=403, detail="Twilio is not configured (PARLEY_TWILIO_AUTH_TOKEN)")
    return settings.twilio_auth_token.get_secret_value()


def rest_client(settings: Settings) -> Client:
    if not settings.twilio_account_sid or settings.twilio_auth_token is None:
        raise RuntimeError("Twilio REST calls need PARLEY_TWILIO_ACCOUNT_SID and PARLEY_TWILIO_AUTH_TOKEN")
    client = Client(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value())
    if settings.twilio_api_base_url:  # a local server speaking Twilio's REST API (tests)
        client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client


async def verified_form(request: Request) -> dict[str, str]:
    """The webhook's form fields, once X-Twilio-Signature has been checked against the public URL."""
    state: AppState = request.app.state.parley
    token = _auth_token(state.settings)
    form = {k: str(v) for k, v in (await request.form()).multi_items()}
    url = public_url(state.settings, str(request.base_url)) + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("x-twilio-signature", "")
    if not RequestValidator(token).validate(url, form, signature):
        log.warning("twilio_bad_signature", path=request.url.path)
        raise HTTPException(status_code=403, detail="invalid X-Twilio-Signature")
    return form


Form = Annotated[dict[str, str], Depends(verified_form)]


def _twiml(response: VoiceResponse, status: int = 200) -> Response:
    return Response(str(response), status_code=status, media_type="application/xml")


# --- webhooks ---------------------------------------------------------------------------


@router.post("/voice")
async def voice(request: Request, form: Form, state: State) -> Response:
    """A call arrived (or a dialled call was answered): connect it to the agent's media stream."""
    called = form.get("To") or form.get("Called")
    caller = form.get("From") or form.get("Caller")
    # Twilio signs no time or nonce: a captured request would mint fresh stream parameters, so each CallSid is
    # answered once (Twilio fetches the voice URL once per call)
    if not await state.nonces.use(f"twilio-voice:{form.get('CallSid', '')}", ANSWERED_TTL_S):
        log.warning("twilio_replayed_webhook", call_sid=form.get("CallSid", "")[:64])
        raise HTTPException(status_code=403, detail="this call was already answered")
    try:
        target, params = await answer_target(
            state.db, state.settings, request.query_params, caller, called, "call_sid", form.get("CallSid", "")
        )
    except NoSuchAgent as exc:
        log.warning("twilio_unknown_agent", error=str(exc))
        response = VoiceResponse()
        response.say("Sorry, this number is not in service.")
        response.hangup()
        return _twiml(response, status=404)
    base = public_url(state.settings, str(request.base_url))
    params = sign_stream(_auth_token(state.settings), params, state.settings.telephony_signature_ttl_s)
    connect = Connect()
    stream = connect.stream(url=f"{ws_base(base)}/telephony/twilio/stream")
    for name, value in params.items():
        stream.parameter(name=name, value=value)
    response = VoiceResponse()
    response.append(connect)
    log.info("twilio_call", call_sid=form.get("CallSid"), agent=target.agent_name)
    return _twiml(response)


@router.post("/status")
async def status_callback(form: Form, state: State) -> Response:
    """Call progress from Twilio: a dialled call that failed is closed; every status is an event."""
    sid, status = form.get("CallSid", ""), form.get("CallStatus", "")
    async with state.db.session() as s:
        repo = CallRepo(s)
        call = await repo.by_provider_id("twilio", sid) if sid else None
        if call is None:
            log.info("twilio_status_unknown_call", call_sid=sid, status=status)
            return Response(status_code=204)
        await record_carrier_status(repo, call, status, FAILED, duration=form.get("CallDuration"))
    return Response(status_code=204)


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    settings = state.settings
    if settings.twilio_auth_token is None:
        await ws.close(code=1008, reason="Twilio is not configured")
        return
    token = settings.twilio_auth_token.get_secret_value()
    signature = ws.headers.get("x-twilio-signature")
    if signature is not None:
        url = public_url(settings, f"http://{ws.url.netloc}").replace("http", "ws", 1) + ws.url.path
        if not RequestValidator(token).validate(url, {}, signature):
            log.warning("twilio_stream_bad_signature")
            await ws.close(code=1008, reason="invalid X-Twilio-Signature")
            return
    await ws.accept()

    find_target = signed_stream_target(state, token)

    def setup(control: StreamControl, start: StreamStart, target: CallTarget) -> None:
        call_sid = start.provider_call_id

        async def transfer(to: str) -> None:
            if not call_sid:
                raise RuntimeError("the stream did not name its call")
            response = VoiceResponse()
            dial = Dial()
            dial.sip(to) if to.startswith("sip:") else dial.number(to)
            response.append(dial)
            await update_call(settings, call_sid, twiml=str(response))

        control.transfer_to = transfer

    await run_media_stream(ws, TwilioStream(), state, find_target=find_target, setup_control=setup)


# --- REST API: outbound calls and call updates -----------------------------------------


async def update_call(settings: Settings, call_sid: str, **fields: Any) -> None:
    client = rest_client(settings)
    await asyncio.to_thread(lambda: client.calls(call_sid).update(**fields))


async def dial(
    state: AppState, target: CallTarget, call_id: uuid.UUID, to: str, from_: str | None, base_url: str
) -> str:
    """Start an outbound call; Twilio fetches the voice webhook when it is answered. Returns the CallSid."""
    if not from_:
        raise ValueError("Twilio needs a 'from' number (one of your Twilio numbers)")
    base = public_url(state.settings, base_url)
    query = urlencode({"agent": str(target.agent_id), "tenant": str(target.tenant_id), "call": str(call_id)})
    client = rest_client(state.settings)

    def create() -> str:
        call = client.calls.create(
            to=to, from_=from_, url=f"{base}/telephony/twilio/voice?{query}", method="POST",
            status_callback=f"{base}/telephony/twilio/status", status_callback_method="POST",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
        )  # fmt: skip
        return str(call.sid)

    return await asyncio.to_thread(create)

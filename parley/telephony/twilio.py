"""Twilio: voice webhook (TwiML ``<Connect><Stream>``), Media Streams, status callbacks, outbound calls.

Wire format (Media Streams, bidirectional): Twilio sends ``connected``, ``start``,
``media`` (base64 µ-law 8 kHz), ``dtmf``, ``mark`` and ``stop``; Parley sends only
``media``, ``mark`` and ``clear`` (anything else is error 31924). Webhooks are
checked with the SDK's ``RequestValidator`` against ``PARLEY_PUBLIC_URL``; the
stream cannot carry query parameters, so the TwiML passes ``<Parameter>``s and an
HMAC over them (keyed by the auth token) that the stream checks at ``start``.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from fastapi import Depends, HTTPException, Request, Response, WebSocket
from pydantic import Field, SecretStr

from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16
from parley.config import Settings
from parley.extras import require
from parley.offload import off_loop
from parley.telephony import amd, webhooks, wire
from parley.telephony.carrier import Carrier, CarrierSettings, Outbound, carriers
from parley.telephony.state import State, TelephonyState
from parley.telephony.stream import run_media_stream

if TYPE_CHECKING:  # the SDK is the [twilio] extra: imported where Twilio is used, after _sdk() checked it is there
    from twilio.rest import Client
    from twilio.twiml.voice_response import VoiceResponse

log = structlog.get_logger(__name__)
router = webhooks.carrier_router("twilio")

#: CallStatus values that mean the call never connected or has ended
FAILED = {"busy", "failed", "no-answer", "canceled"}
ANSWERED_TTL_S = 24 * 3600  # how long a CallSid whose voice webhook was answered is remembered


class TwilioSettings(CarrierSettings):
    credentials = ("twilio_auth_token",)

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = Field(None, description="checks Twilio's signatures; unset: Twilio is off")
    twilio_api_base_url: str | None = Field(None, description="tests: a local server speaking Twilio's REST API")


class TwilioStream(wire.StreamProtocol):
    """Twilio Media Streams JSON messages ↔ call events."""

    name = "twilio"
    sample_rate = 8000
    supports_marks = True

    def __init__(self) -> None:
        self.stream_sid = ""
        self._check_order = wire.SequenceCheck("sequenceNumber")

    def parse(self, message: str | bytes) -> list[wire.Event]:
        data, event = wire.json_event(message, "Media Streams messages")
        self._check_order(data)
        if event == "connected":
            return [wire.Info(f"connected protocol={data.get('protocol')} version={data.get('version')}")]
        if event == "start":
            if self.stream_sid:  # the stream is already named: another streamSid must not take it over
                raise wire.WireError("a second start")
            return [self._start(data)]
        if not self.stream_sid:
            raise wire.WireError(f"{event} before start")
        if data.get("streamSid", self.stream_sid) != self.stream_sid:
            raise wire.WireError("message for another stream")
        if event == "media":
            media = wire.member(data, "media")
            if media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return []
            payload = wire.b64_payload(media.get("payload", ""))
            return [wire.Media(ulaw_to_pcm16(payload))] if payload else []
        if event == "dtmf":
            return [wire.dtmf(str(wire.member(data, "dtmf").get("digit", "")))]
        if event == "mark":
            return [wire.MarkPlayed(str(wire.member(data, "mark").get("name", "")))]
        if event == "stop":
            return [wire.Stop("caller-hangup")]
        raise wire.WireError(f"unknown event {event[:32]!r}")

    def _start(self, data: dict[str, Any]) -> wire.StreamStart:
        start = wire.member(data, "start")
        sid = str(data.get("streamSid") or start.get("streamSid") or "")
        if not sid:
            raise wire.WireError("start without streamSid")
        fmt = start.get("mediaFormat") or {}
        if isinstance(fmt, dict) and fmt.get("encoding") not in (None, "audio/x-mulaw"):
            raise wire.WireError(f"unsupported encoding {fmt.get('encoding')!r}")
        self.stream_sid = sid
        params = start.get("customParameters") or {}
        params = {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}
        return wire.StreamStart(
            stream_id=sid,
            provider_call_id=str(start.get("callSid") or "") or None,
            caller=params.get("caller"),
            called=params.get("called"),
            params=params,
        )

    def audio(self, pcm: bytes) -> list[wire.Outgoing]:
        payload = base64.b64encode(pcm16_to_ulaw(pcm)).decode()
        return [json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})]

    def mark(self, name: str) -> wire.Outgoing | None:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> wire.Outgoing | None:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})


# --- configuration helpers ------------------------------------------------------------


def _settings(settings: Settings) -> TwilioSettings:
    return settings.section(TwilioSettings)


def _sdk() -> None:
    require("twilio", "Twilio (PARLEY_TWILIO_AUTH_TOKEN is set)", "twilio")


def _auth_token(settings: Settings) -> str:
    token = _settings(settings).twilio_auth_token
    if token is None or not token.get_secret_value():
        raise HTTPException(status_code=403, detail="Twilio is not configured (PARLEY_TWILIO_AUTH_TOKEN)")
    _sdk()
    return token.get_secret_value()


def rest_client(settings: Settings) -> Client:
    own = _settings(settings)
    if not own.twilio_account_sid or own.twilio_auth_token is None:
        raise RuntimeError("Twilio REST calls need PARLEY_TWILIO_ACCOUNT_SID and PARLEY_TWILIO_AUTH_TOKEN")
    _sdk()
    from twilio.rest import Client

    client = Client(own.twilio_account_sid, own.twilio_auth_token.get_secret_value())
    if own.twilio_api_base_url:  # a local server speaking Twilio's REST API (tests)
        client.api.base_url = own.twilio_api_base_url.rstrip("/")
    return client


async def verified_form(request: Request, state: State) -> dict[str, str]:
    """The webhook's form fields, once X-Twilio-Signature has been checked against the public URL."""
    token = _auth_token(state.settings)
    form = {k: str(v) for k, v in (await request.form()).multi_items()}
    url = webhooks.public_url(state.settings, str(request.base_url)) + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("x-twilio-signature", "")
    from twilio.request_validator import RequestValidator

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
    from twilio.twiml.voice_response import Connect, VoiceResponse

    called = form.get("To") or form.get("Called")
    caller = form.get("From") or form.get("Caller")
    # Twilio signs no time or nonce: a captured request would mint fresh stream parameters, so each CallSid is
    # answered once (Twilio fetches the voice URL once per call)
    if not await state.nonces.use(f"twilio-voice:{form.get('CallSid', '')}", ANSWERED_TTL_S):
        log.warning("twilio_replayed_webhook", call_sid=form.get("CallSid", "")[:64])
        raise HTTPException(status_code=403, detail="this call was already answered")
    secret, call_sid = _auth_token(state.settings), form.get("CallSid", "")
    answered = await webhooks.signed_answer(
        state, "twilio", secret, request.query_params, (caller, called), "call_sid", call_sid
    )
    if answered is None:
        response = VoiceResponse()
        response.say("Sorry, this number is not in service.")
        response.hangup()
        return _twiml(response, status=404)
    target, params = answered
    if form.get("AnsweredBy") and request.query_params.get("call"):  # a dial with machine detection
        await amd.record_by_id(state.db, target.tenant_id, request.query_params["call"], "twilio", form["AnsweredBy"])
    base = webhooks.public_url(state.settings, str(request.base_url))
    connect = Connect()
    stream = connect.stream(url=f"{webhooks.ws_base(base)}/telephony/twilio/stream")
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
    await amd.record_by_provider_id(state.db, "twilio", sid, form.get("AnsweredBy"))
    if not await webhooks.carrier_status(state, "twilio", sid, status, FAILED, duration=form.get("CallDuration")):
        log.info("twilio_status_unknown_call", call_sid=sid, status=status)
    return Response(status_code=204)


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    settings = state.settings
    auth_token = _settings(settings).twilio_auth_token
    if auth_token is None:
        await ws.close(code=1008, reason="Twilio is not configured")
        return
    token = auth_token.get_secret_value()
    signature = ws.headers.get("x-twilio-signature")
    if signature is not None:
        _sdk()
        from twilio.request_validator import RequestValidator

        url = webhooks.public_url(settings, f"http://{ws.url.netloc}").replace("http", "ws", 1) + ws.url.path
        if not RequestValidator(token).validate(url, {}, signature):
            log.warning("twilio_stream_bad_signature")
            await ws.close(code=1008, reason="invalid X-Twilio-Signature")
            return
    await ws.accept()
    await run_media_stream(
        ws, carriers.get("twilio"), TwilioStream(), state, webhooks.signed_stream_target(state, token)
    )


# --- REST API: outbound calls and call updates -----------------------------------------


async def update_call(settings: Settings, call_sid: str, **fields: Any) -> None:
    client = rest_client(settings)
    await off_loop(lambda: client.calls(call_sid).update(**fields))


@carriers.register
class Twilio(Carrier):
    """Twilio Programmable Voice: TwiML webhooks, bidirectional Media Streams, the REST API for calls."""

    name = "twilio"
    settings_model = TwilioSettings
    protocol = TwilioStream
    router = router

    async def dial(self, state: TelephonyState, call: Outbound) -> str:
        """Start an outbound call; Twilio fetches the voice webhook when it is answered. Returns the CallSid."""
        if not call.from_:
            raise ValueError("Twilio needs a 'from' number (one of your Twilio numbers)")
        client = rest_client(state.settings)
        detection = amd.twilio_params(call.leave_message) if call.machine_detection else {}

        def create() -> str:
            created = client.calls.create(
                **detection,
                to=call.to,
                from_=call.from_,
                url=f"{call.base}/telephony/twilio/voice?{call.query}",
                method="POST",
                status_callback=f"{call.base}/telephony/twilio/status",
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
            )
            return str(created.sid)

        return await off_loop(create)

    async def transfer(self, state: TelephonyState, call_id: str, to: str, base_url: str) -> None:
        """The live call gets TwiML that dials ``to`` (the media stream ends with it)."""
        _sdk()
        from twilio.twiml.voice_response import Dial, VoiceResponse

        response = VoiceResponse()
        dial = Dial()
        dial.sip(to) if to.startswith("sip:") else dial.number(to)
        response.append(dial)
        await update_call(state.settings, call_id, twiml=str(response))

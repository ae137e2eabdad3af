"""Vonage Voice API: answer URL (an NCCO that connects the call to a WebSocket), event URL, outbound calls.

Wire format (developer.vonage.com/voice/voice-api/concepts/websockets): the first
text message is ``websocket:connected`` with the NCCO endpoint's ``headers`` at the
top level; then binary 16-bit linear PCM frames (640 bytes = 20 ms at 16 kHz) both
ways; DTMF arrives as ``websocket:dtmf``. Parley sends ``{"action": "clear"}`` on
barge-in and ``{"action": "notify", "payload": …}`` marks, which Vonage echoes as
``websocket:notify`` once the audio before them has played.

Signed webhooks carry ``Authorization: Bearer <JWT>`` (HS256, the account's
signature secret, ``PARLEY_VONAGE_SIGNATURE_SECRET``: until it is set, Vonage is
off). Unsigned or mis-signed webhooks are refused (403) and the stream's headers
carry an HMAC that the stream checks, as Twilio's do.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import structlog
from fastapi import HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from pydantic import Field, SecretStr

from parley.config import Settings
from parley.net.clients import shared_client
from parley.telephony import amd, webhooks, wire
from parley.telephony.carrier import Carrier, CarrierSettings, Outbound, carriers
from parley.telephony.state import State, TelephonyState
from parley.telephony.stream import run_media_stream

log = structlog.get_logger(__name__)
router = webhooks.carrier_router("vonage")

SAMPLE_RATE = 16000
#: event statuses that mean a dialled call never connected
FAILED = {"busy", "cancelled", "unanswered", "rejected", "failed", "timeout"}
CLOCK_SKEW_S = 60  # a webhook JWT may say it was issued this far in the future


class VonageSettings(CarrierSettings):
    credentials = ("vonage_signature_secret",)

    vonage_application_id: str | None = None
    vonage_private_key_path: Path | None = None
    vonage_signature_secret: SecretStr | None = Field(
        None, description="checks Vonage's signed webhooks; unset: Vonage is off"
    )
    vonage_api_base_url: str = "https://api.nexmo.com"


def _settings(settings: Settings) -> VonageSettings:
    return settings.section(VonageSettings)


class VonageStream(wire.StreamProtocol):
    """Vonage WebSocket messages ↔ call events."""

    name = "vonage"
    sample_rate = SAMPLE_RATE
    supports_marks = True

    def __init__(self) -> None:
        self.connected = False

    def parse(self, message: str | bytes) -> list[wire.Event]:
        if isinstance(message, bytes):
            if not self.connected:
                raise wire.WireError("audio before websocket:connected")
            if len(message) % 2:
                raise wire.WireError(f"audio frame of odd length {len(message)}")
            return [wire.Media(message)] if message else []
        data = wire.json_object(message)
        event = data.get("event")
        if not isinstance(event, str):
            raise wire.WireError("text message without an event name")
        if event == "websocket:connected":
            return [self._start(data)]
        if not self.connected:
            raise wire.WireError(f"{event[:40]} before websocket:connected")
        if event == "websocket:dtmf":
            nested = data.get("dtmf")
            return [
                wire.dtmf(str(data.get("digit") or (nested.get("digit") if isinstance(nested, dict) else "") or ""))
            ]
        if event == "websocket:notify":
            payload = data.get("payload")
            if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
                return [wire.Info("notify without a mark name")]
            return [wire.MarkPlayed(payload["name"])]
        # websocket:cleared and whatever else Vonage adds: the docs say to look at the event and ignore the rest
        return [wire.Info(event[:60])]

    def _start(self, data: dict[str, Any]) -> wire.StreamStart:
        rate = _rate(str(data.get("content-type", "")))
        if rate not in (8000, 16000):
            raise wire.WireError(f"unsupported content-type {str(data.get('content-type'))[:40]!r}")
        self.sample_rate = rate
        self.connected = True
        params = {str(k): str(v) for k, v in data.items() if k not in ("event", "content-type") and v is not None}
        return wire.StreamStart(
            stream_id=params.get("call_uuid", ""),
            provider_call_id=params.get("call_uuid") or None,
            caller=params.get("caller") or None,
            called=params.get("called") or None,
            params=params,
        )

    def audio(self, pcm: bytes) -> list[wire.Outgoing]:
        return [pcm]

    def mark(self, name: str) -> wire.Outgoing | None:
        return json.dumps({"action": "notify", "payload": {"name": name}})

    def clear(self) -> wire.Outgoing | None:
        return json.dumps({"action": "clear"})


def _rate(content_type: str) -> int:
    """``audio/l16;rate=16000`` → 16000 (0 when it is not linear PCM)."""
    kind, _, rest = content_type.replace(" ", "").lower().partition(";")
    if kind != "audio/l16" or not rest.startswith("rate="):
        return 0
    return int(rest[5:]) if rest[5:].isdigit() and len(rest) < 12 else 0


# --- webhooks ---------------------------------------------------------------------------


async def verified_fields(request: Request, state: TelephonyState) -> dict[str, str]:
    """The webhook's fields (query, and the JSON body of a POST), once the Vonage JWT has been checked.

    What the JWT's ``payload_hash`` does not cover is not used: a POST whose hash covers only its body has its
    query ignored, so a captured JWT cannot be sent again with another ``?agent=``.
    """
    body = await request.body() if request.method == "POST" else b""
    fields: dict[str, str] = {}
    if body:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise HTTPException(status_code=400, detail="body is not JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(status_code=400, detail="body is not a JSON object")
        fields = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items() if v is not None}
    query = dict(request.query_params)
    secret = _signature_secret(state.settings)
    claims = _verified_claims(state.settings, secret, request.headers.get("authorization", ""))
    covered = _covered(claims.get("payload_hash"), query, body)
    if covered is None:
        log.warning("vonage_payload_mismatch", path=request.url.path)
        raise HTTPException(status_code=403, detail="payload does not match its signature")
    # checked last, so that a tampered copy cannot use up the genuine request's jti
    ttl = state.settings.telephony_signature_ttl_s + CLOCK_SKEW_S
    if not await state.nonces.use(f"vonage-jti:{claims['jti']}", ttl):
        log.warning("vonage_replayed_jwt", path=request.url.path)
        raise HTTPException(status_code=403, detail="this Vonage signature was already used")
    if covered == "body" and query:
        log.info("vonage_query_not_signed", path=request.url.path, ignored=sorted(query)[:10])
        return fields
    return {**query, **fields}


def _signature_secret(settings: Settings) -> str:
    """The key of Vonage's signatures and of ours (the router refuses everything before this while it is unset)."""
    own = _settings(settings).vonage_signature_secret
    secret = own.get_secret_value() if own is not None else ""
    if not secret:
        raise HTTPException(status_code=403, detail="Vonage is not configured (PARLEY_VONAGE_SIGNATURE_SECRET)")
    return secret


def _verified_claims(settings: Settings, secret: str, authorization: str) -> dict[str, Any]:
    """The claims of a JWT signed (HS256) with the signature secret, issued within the signature TTL, with a jti."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        log.warning("vonage_unsigned_webhook")
        raise HTTPException(status_code=403, detail="missing Vonage signature (Authorization: Bearer)")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["iat", "jti"]}, leeway=CLOCK_SKEW_S
        )
    except jwt.PyJWTError as exc:
        log.warning("vonage_bad_signature", error=str(exc)[:100])
        raise HTTPException(status_code=403, detail="invalid Vonage signature") from None
    try:
        age = time.time() - float(claims["iat"])
    except (TypeError, ValueError):
        age = float("inf")
    if not age <= settings.telephony_signature_ttl_s:
        raise HTTPException(status_code=403, detail="stale Vonage signature")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise HTTPException(status_code=403, detail="invalid Vonage signature (jti)")
    app_id, own_id = claims.get("application_id"), _settings(settings).vonage_application_id
    if own_id and app_id is not None and app_id != own_id:
        raise HTTPException(status_code=403, detail="signed for another Vonage application")
    return claims


def _covered(expected: object, query: dict[str, str], body: bytes) -> str | None:
    """What ``payload_hash`` covers: "all" (query and body), "body" (the body only), or None (it does not match).

    Vonage hashes the webhook's parameters as a compact JSON object: the query's for GET, the body's for POST
    (or both merged). Without a payload there is nothing to hash; with one, the hash is required.
    """
    if not body and not query:
        return "all"
    if not isinstance(expected, str):
        return None
    want = expected.lower()
    merged: dict[str, Any] = dict(query)
    body_forms: list[bytes] = []
    if body:
        body_forms.append(body)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            body_forms += _compact(data)
            merged.update(data)
    if any(_sha256_is(want, form) for form in _compact(merged)) or (not query and _any_is(want, body_forms)):
        return "all"
    return "body" if _any_is(want, body_forms) else None


def _compact(data: dict[str, Any]) -> list[bytes]:
    """The compact JSON text of ``data``: with non-ASCII as is (as JavaScript writes it) and escaped."""
    return [
        json.dumps(data, separators=(",", ":"), ensure_ascii=e).encode("utf-8", "surrogatepass") for e in (False, True)
    ]


def _sha256_is(want: str, data: bytes) -> bool:
    return webhooks.safe_equal(hashlib.sha256(data).hexdigest(), want)


def _any_is(want: str, forms: list[bytes]) -> bool:
    return any(_sha256_is(want, form) for form in forms)


@router.get("/answer", operation_id="vonage_answer_get")
@router.post("/answer", operation_id="vonage_answer_post")
async def answer(request: Request, state: State) -> Response:
    """A call arrived (or a dialled call was answered): an NCCO that connects it to the agent's WebSocket."""
    f = await verified_fields(request, state)
    secret = _signature_secret(state.settings)
    answered = await webhooks.signed_answer(
        state, "vonage", secret, f, (f.get("from"), f.get("to")), "call_uuid", f.get("uuid", "")
    )
    if answered is None:
        ncco = [{"action": "talk", "text": "Sorry, this number is not in service."}]
        return JSONResponse(ncco, status_code=404)
    target, headers = answered
    base = webhooks.public_url(state.settings, str(request.base_url))
    endpoint = {
        "type": "websocket",
        "uri": f"{webhooks.ws_base(base)}/telephony/vonage/stream",
        "content-type": f"audio/l16;rate={SAMPLE_RATE}",
        "headers": headers,
    }
    log.info("vonage_call", call_uuid=f.get("uuid"), agent=target.agent_name)
    return JSONResponse([{"action": "connect", "endpoint": [endpoint]}])


@router.post("/event")
async def event(request: Request, state: State) -> Response:
    """Call progress from Vonage: every status is a call event; a dialled call that failed is closed."""
    f = await verified_fields(request, state)
    call_uuid, status = f.get("uuid", ""), f.get("status", "")
    if status in ("human", "machine"):  # advanced machine detection's result
        await amd.record_by_provider_id(state.db, "vonage", call_uuid, status)
    if not await webhooks.carrier_status(state, "vonage", call_uuid, status, FAILED, duration=f.get("duration")):
        log.info("vonage_event_unknown_call", call_uuid=call_uuid, status=status)
    return Response(status_code=204)


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    find_target = webhooks.signed_stream_target(state, _signature_secret(state.settings))
    await ws.accept()
    await run_media_stream(ws, carriers.get("vonage"), VonageStream(), state, find_target)


# --- Voice API: outbound calls and call updates ----------------------------------------


def _e164(number: str) -> str:
    """Vonage writes numbers without the plus."""
    return number.strip().lstrip("+")


def api_token(settings: Settings) -> str:
    """An application JWT (RS256 with the application's private key), valid for five minutes."""
    own = _settings(settings)
    if not own.vonage_application_id or own.vonage_private_key_path is None:
        raise RuntimeError("Vonage calls need PARLEY_VONAGE_APPLICATION_ID and PARLEY_VONAGE_PRIVATE_KEY_PATH")
    key = own.vonage_private_key_path.read_text()
    now = int(time.time())
    claims = {"application_id": own.vonage_application_id, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm="RS256")


async def api_request(settings: Settings, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_token(settings)}"}
    url = _settings(settings).vonage_api_base_url.rstrip("/") + path
    response = await shared_client("vonage").request(method, url, json=body, headers=headers)
    if response.status_code >= 400:
        try:
            detail = response.json()
            text = f"{detail.get('title', '')}: {detail.get('detail', '')}".strip(": ")
        except ValueError:
            text = response.text[:200]
        raise RuntimeError(f"Vonage refused the request ({response.status_code}): {text}")
    if not response.content:
        return {}
    data = response.json()
    return data if isinstance(data, dict) else {}


def _endpoint(to: str) -> dict[str, str]:
    """Where a call goes: a SIP URI, or a phone number as Vonage writes it."""
    return {"type": "sip", "uri": to} if to.startswith("sip:") else {"type": "phone", "number": _e164(to)}


@carriers.register
class Vonage(Carrier):
    """Vonage Voice API: NCCO webhooks signed with JWTs, the WebSocket of linear PCM, the Voice API for calls."""

    name = "vonage"
    settings_model = VonageSettings
    protocol = VonageStream
    router = router

    async def dial(self, state: TelephonyState, call: Outbound) -> str:
        """Start an outbound call; Vonage fetches the answer URL when it is answered. Returns the call's uuid."""
        if not call.from_:
            raise ValueError("Vonage needs a 'from' number (one of your Vonage numbers)")
        if missing := webhooks.missing_credentials(state.settings, "vonage"):
            raise RuntimeError(f"Vonage calls need {' and '.join(missing)}: without it the answer webhook is refused")
        body = {
            "to": [_endpoint(call.to)],
            "from": {"type": "phone", "number": _e164(call.from_)},
            "answer_url": [f"{call.base}/telephony/vonage/answer?{call.query}"],
            "answer_method": "GET",
            "event_url": [f"{call.base}/telephony/vonage/event"],
            "event_method": "POST",
            **(amd.vonage_params(call.leave_message) if call.machine_detection else {}),
        }
        created = await api_request(state.settings, "POST", "/v1/calls", body)
        call_uuid = created.get("uuid")
        if not isinstance(call_uuid, str) or not call_uuid:
            raise RuntimeError("Vonage did not return the call's uuid")
        return call_uuid

    async def transfer(self, state: TelephonyState, call_id: str, to: str, base_url: str) -> None:
        """The live call gets an NCCO that connects it to ``to``."""
        ncco = [{"action": "connect", "endpoint": [_endpoint(to)]}]
        body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
        await api_request(state.settings, "PUT", f"/v1/calls/{call_id}", body)

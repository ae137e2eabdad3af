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
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse

from parley.api.deps import State
from parley.api.state import AppState
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
    StreamControl,
    StreamProtocol,
    StreamStart,
    WireError,
    json_object,
    run_media_stream,
)
from parley.telephony.webhooks import (
    answer_target,
    carrier_configured,
    missing_credentials,
    public_url,
    safe_equal,
    sign_stream,
    signed_stream_target,
    source_limit,
    ws_base,
)

log = structlog.get_logger(__name__)
router = APIRouter(
    prefix="/telephony/vonage", tags=["telephony"],
    dependencies=[Depends(source_limit), Depends(carrier_configured("vonage"))],
)  # fmt: skip

SAMPLE_RATE = 16000
#: event statuses that mean a dialled call never connected
FAILED = {"busy", "cancelled", "unanswered", "rejected", "failed", "timeout"}
DIGITS = "0123456789*#ABCD"
CLOCK_SKEW_S = 60  # a webhook JWT may say it was issued this far in the future


class VonageStream(StreamProtocol):
    """Vonage WebSocket messages ↔ call events."""

    name = "vonage"
    sample_rate = SAMPLE_RATE
    supports_marks = True

    def __init__(self) -> None:
        self.connected = False

    def parse(self, message: str | bytes) -> list[Event]:
        if isinstance(message, bytes):
            if not self.connected:
                raise WireError("audio before websocket:connected")
            if len(message) % 2:
                raise WireError(f"audio frame of odd length {len(message)}")
            return [Media(message)] if message else []
        data = json_object(message)
        event = data.get("event")
        if not isinstance(event, str):
            raise WireError("text message without an event name")
        if event == "websocket:connected":
            return [self._start(data)]
        if not self.connected:
            raise WireError(f"{event[:40]} before websocket:connected")
        if event == "websocket:dtmf":
            nested = data.get("dtmf")
            digit = str(data.get("digit") or (nested.get("digit") if isinstance(nested, dict) else "") or "")
            if len(digit) != 1 or digit not in DIGITS:
                raise WireError(f"bad DTMF digit {digit[:8]!r}")
            return [Dtmf(digit)]
        if event == "websocket:notify":
            payload = data.get("payload")
            if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
                return [Info("notify without a mark name")]
            return [MarkPlayed(payload["name"])]
        # websocket:cleared and whatever else Vonage adds: the docs say to look at the event and ignore the rest
        return [Info(event[:60])]

    def _start(self, data: dict[str, Any]) -> StreamStart:
        rate = _rate(str(data.get("content-type", "")))
        if rate not in (8000, 16000):
            raise WireError(f"unsupported content-type {str(data.get('content-type'))[:40]!r}")
        self.sample_rate = rate
        self.connected = True
        params = {str(k): str(v) for k, v in data.items() if k not in ("event", "content-type") and v is not None}
        return StreamStart(
            stream_id=params.get("call_uuid", ""), provider_call_id=params.get("call_uuid") or None,
            caller=params.get("caller") or None, called=params.get("called") or None, params=params,
        )  # fmt: skip

    def audio(self, pcm: bytes) -> list[Outgoing]:
        return [pcm]

    def mark(self, name: str) -> Outgoing | None:
        return json.dumps({"action": "notify", "payload": {"name": name}})

    def clear(self) -> Outgoing | None:
        return json.dumps({"action": "clear"})


def _rate(content_type: str) -> int:
    """``audio/l16;rate=16000`` → 16000 (0 when it is not linear PCM)."""
    kind, _, rest = content_type.replace(" ", "").lower().partition(";")
    if kind != "audio/l16" or not rest.startswith("rate="):
        return 0
    return int(rest[5:]) if rest[5:].isdigit() and len(rest) < 12 else 0


# --- webhooks ---------------------------------------------------------------------------


async def verified_fields(request: Request) -> dict[str, str]:
    """The webhook's fields (query, and the JSON body of a POST), once the Vonage JWT has been checked.

    What the JWT's ``payload_hash`` does not cover is not used: a POST whose hash covers only its body has its
    query ignored, so a captured JWT cannot be sent again with another ``?agent=``.
    """
    state: AppState = request.app.state.parley
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
    secret = settings.vonage_signature_secret.get_secret_value() if settings.vonage_signature_secret is not None else ""
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
    app_id = claims.get("application_id")
    if settings.vonage_application_id and app_id is not None and app_id != settings.vonage_application_id:
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
    return [json.dumps(data, separators=(",", ":"), ensure_ascii=e).encode("utf-8", "surrogatepass")
            for e in (False, True)]  # fmt: skip


def _sha256_is(want: str, data: bytes) -> bool:
    return safe_equal(hashlib.sha256(data).hexdigest(), want)


def _any_is(want: str, forms: list[bytes]) -> bool:
    return any(_sha256_is(want, form) for form in forms)


@router.get("/answer", operation_id="vonage_answer_get")
@router.post("/answer", operation_id="vonage_answer_post")
async def answer(request: Request, state: State) -> Response:
    """A call arrived (or a dialled call was answered): an NCCO that connects it to the agent's WebSocket."""
    f = await verified_fields(request)
    try:
        target, headers = await answer_target(
            state.db, state.settings, f, f.get("from"), f.get("to"), "call_uuid", f.get("uuid", "")
        )
    except NoSuchAgent as exc:
        log.warning("vonage_unknown_agent", error=str(exc))
        ncco = [{"action": "talk", "text": "Sorry, this number is not in service."}]
        return JSONResponse(ncco, status_code=404)
    base = public_url(state.settings, str(request.base_url))
    headers = sign_stream(_signature_secret(state.settings), headers, state.settings.telephony_signature_ttl_s)
    endpoint = {"type": "websocket", "uri": f"{ws_base(base)}/telephony/vonage/stream",
                "content-type": f"audio/l16;rate={SAMPLE_RATE}", "headers": headers}  # fmt: skip
    log.info("vonage_call", call_uuid=f.get("uuid"), agent=target.agent_name)
    return JSONResponse([{"action": "connect", "endpoint": [endpoint]}])


@router.post("/event")
async def event(request: Request, state: State) -> Response:
    """Call progress from Vonage: every status is a call event; a dialled call that failed is closed."""
    f = await verified_fields(request)
    call_uuid, status = f.get("uuid", ""), f.get("status", "")
    async with state.db.session() as s:
        repo = CallRepo(s)
        call = await repo.by_provider_id("vonage", call_uuid) if call_uuid else None
        if call is None:
            log.info("vonage_event_unknown_call", call_uuid=call_uuid, status=status)
            return Response(status_code=204)
        await record_carrier_status(repo, call, status, FAILED, duration=f.get("duration"))
    return Response(status_code=204)


@router.websocket("/stream")
async def stream(ws: WebSocket, state: State) -> None:
    settings = state.settings
    find_target = signed_stream_target(state, _signature_secret(settings))
    await ws.accept()

    def setup(control: StreamControl, start: StreamStart, target: CallTarget) -> None:
        call_uuid = start.provider_call_id

        async def transfer(to: str) -> None:
            if not call_uuid:
                raise RuntimeError("the stream did not name its call")
            endpoint = {"type": "sip", "uri": to} if to.startswith("sip:") else {"type": "phone", "number": _e164(to)}
            ncco = [{"action": "connect", "endpoint": [endpoint]}]
            await api_request(settings, "PUT", f"/v1/calls/{call_uuid}",
                              {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}})  # fmt: skip

        control.transfer_to = transfer

    await run_media_stream(ws, VonageStream(), state, find_target=find_target, setup_control=setup)


# --- Voice API: outbound calls and call updates ----------------------------------------


def _e164(number: str) -> str:
    """Vonage writes numbers without the plus."""
    return number.strip().lstrip("+")


def api_token(settings: Settings) -> str:
    """An application JWT (RS256 with the application's private key), valid for five minutes."""
    if not settings.vonage_application_id or settings.vonage_private_key_path is None:
        raise RuntimeError("Vonage calls need PARLEY_VONAGE_APPLICATION_ID and PARLEY_VONAGE_PRIVATE_KEY_PATH")
    key = settings.vonage_private_key_path.read_text()
    now = int(time.time())
    claims = {"application_id": settings.vonage_application_id, "iat": now, "exp": now + 300,
              "jti": uuid.uuid4().hex}  # fmt: skip
    return jwt.encode(claims, key, algorithm="RS256")


async def api_request(settings: Settings, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_token(settings)}"}
    async with httpx.AsyncClient(base_url=settings.vonage_api_base_url.rstrip("/"), timeout=15) as client:
        response = await client.request(method, path, json=body, headers=headers)
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


async def dial(
    state: AppState, target: CallTarget, call_id: uuid.UUID, to: str, from_: str | None, base_url: str
) -> str:
    """Start an outbound call; Vonage fetches the answer URL when it is answered. Returns the call's uuid."""
    if not from_:
        raise ValueError("Vonage needs a 'from' number (one of your Vonage numbers)")
    if missing := missing_credentials(state.settings, "vonage"):
        raise RuntimeError(f"Vonage calls need {' and '.join(missing)}: without it the answer webhook is refused")
    base = public_url(state.settings, base_url)
    query = urlencode({"agent": str(target.agent_id), "tenant": str(target.tenant_id), "call": str(call_id)})
    body = {
        "to": [{"type": "sip", "uri": to} if to.startswith("sip:") else {"type": "phone", "number": _e164(to)}],
        "from": {"type": "phone", "number": _e164(from_)},
        "answer_url": [f"{base}/telephony/vonage/answer?{query}"], "answer_method": "GET",
        "event_url": [f"{base}/telephony/vonage/event"], "event_method": "POST",
    }  # fmt: skip
    created = await api_request(state.settings, "POST", "/v1/calls", body)
    call_uuid = created.get("uuid")
    if not isinstance(call_uuid, str) or not call_uuid:
        raise RuntimeError("Vonage did not return the call's uuid")
    return call_uuid

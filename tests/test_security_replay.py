"""Replays and malformed credentials against the carriers' webhooks and media streams of a real `parley serve`.

Issue 8, findings 6, 7, 13, 15 and the telephony parts of 2 and 12: a signed stream answer (Twilio
``<Parameter>``s, Vonage NCCO headers, Plivo stream URL) opens one stream, within its expiry; a Vonage JWT
and a Plivo nonce are used once, and a JWT binds what selects the agent; non-ASCII credentials are refused
(403 / 1008), never a 500 or an abnormal close; a second Twilio ``start`` does not take the call over;
Exotel without a secret believes no callback; carriers are rate limited per source address. With
PARLEY_REDIS_URL, two workers share the one-use memory: a replay on the second worker is refused too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.exceptions import ConnectionClosed, InvalidStatus

from parley.telephony.exotel import ExotelStream
from parley.telephony.plivo import PlivoStream, signature_v3
from parley.telephony.stream import StreamProtocol, WireError
from parley.telephony.twilio import TwilioStream
from parley.telephony.webhooks import stream_token

from .support.service import Service, backend_env, running_service

TWILIO_SID, TWILIO_TOKEN = "AC" + "7" * 32, "replay-twilio-auth-token-0123"
VONAGE_SECRET = "replay-vonage-signature-secret-0123"
PLIVO_ID, PLIVO_TOKEN = "MAREPLAY0000000000AA", "replay-plivo-auth-token-0123"
PUBLIC = "https://parley.example.com"
CARRIERS = {"PARLEY_TWILIO_ACCOUNT_SID": TWILIO_SID, "PARLEY_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "PARLEY_VONAGE_SIGNATURE_SECRET": VONAGE_SECRET, "PARLEY_PLIVO_AUTH_ID": PLIVO_ID,
            "PARLEY_PLIVO_AUTH_TOKEN": PLIVO_TOKEN, "PARLEY_PUBLIC_URL": PUBLIC}  # fmt: skip
FAST_AGENT = {  # model-free: energy VAD, canned STT and LLM, tone TTS
    "name": "replay-desk", "system_prompt": "Canned replies.", "greeting": "Hello, thanks for calling.",
    "vad": {"provider": "energy"}, "stt": {"provider": "canned", "options": {"text": "hello"}},
    "llm": {"provider": "canned", "options": {"default": "We open at nine."}},
    "tts": {"provider": "tone", "fallback": None},
}  # fmt: skip


# --- the carriers' side -----------------------------------------------------------------------------


def make_agent(service: Service, tenant: str) -> str:
    with service.client(service.create_key(tenant)) as c:
        created = c.post("/v1/agents", json=FAST_AGENT)
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


def post_voice(service: Service, agent: str, sid: str) -> httpx.Response:
    """Twilio fetches the voice webhook, signed by the SDK."""
    path = f"/telephony/twilio/voice?agent={agent}"
    form = {"CallSid": sid, "AccountSid": TWILIO_SID, "From": "+15550109999", "To": "+15550100200",
            "Direction": "inbound", "CallStatus": "ringing"}  # fmt: skip
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + path, form)
    return httpx.post(service.url + path, data=form, headers={"X-Twilio-Signature": signature})


def twilio_voice(service: Service, agent: str) -> dict[str, str]:
    """The stream <Parameter>s of the TwiML a fresh call's voice webhook answers."""
    r = post_voice(service, agent, "CA" + secrets.token_hex(16))
    assert r.status_code == 200, r.text
    stream = ET.fromstring(r.text).find("./Connect/Stream")
    assert stream is not None
    return {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


def twilio_start(params: dict[str, str], stream_sid: str = "MZ1", seq: int = 1) -> str:
    start = {"streamSid": stream_sid, "callSid": params.get("call_sid", "CA1"), "tracks": ["inbound"],
             "customParameters": params, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                         "channels": 1}}  # fmt: skip
    return json.dumps({"event": "start", "sequenceNumber": str(seq), "streamSid": stream_sid, "start": start})


def twilio_media(seq: int, stream_sid: str = "MZ1") -> str:
    media = {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20),
             "payload": base64.b64encode(b"\xff" * 160).decode()}  # fmt: skip
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": stream_sid, "media": media})


async def opened(url: str, opening: list[str], within: float = 30.0) -> int | str:
    """Open a media stream and send ``opening``: "open" once Parley sends the agent's audio, else the close code."""
    try:
        async with websockets.connect(url, open_timeout=15, max_size=2**20) as ws:
            for message in opening:
                await ws.send(message)
            await asyncio.wait_for(ws.recv(), within)
            return "open"
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else 1006


def stream_of(service: Service, carrier: str) -> str:
    return service.url.replace("http", "ws") + f"/telephony/{carrier}/stream"


def vonage_jwt(payload: bytes | None, iat: float | None = None, jti: str | None = None) -> dict[str, str]:
    claims: dict[str, Any] = {"iat": int(iat or time.time()), "jti": jti or uuid.uuid4().hex, "iss": "Vonage"}
    if payload is not None:
        claims["payload_hash"] = hashlib.sha256(payload).hexdigest()
    return {"Authorization": f"Bearer {jwt.encode(claims, VONAGE_SECRET, algorithm='HS256')}"}


def vonage_get(service: Service, query: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
    """A GET answer webhook as Vonage signs it: payload_hash over the query parameters as compact JSON."""
    compact = json.dumps(query, separators=(",", ":")).encode()
    return httpx.get(f"{service.url}/telephony/vonage/answer", params=query, headers=headers or vonage_jwt(compact))


def vonage_query(agent: str) -> dict[str, str]:
    return {"to": "447700900000", "from": "447700900001", "uuid": str(uuid.uuid4()), "agent": agent}


def plivo_headers(path: str, params: dict[str, str], nonce: str | None = None) -> dict[str, str]:
    """X-Plivo-Signature-V3 as Plivo computes it: over the public URL it was given, the parameters, a nonce."""
    nonce = nonce or secrets.token_hex(10)
    return {"X-Plivo-Signature-V3": signature_v3(PLIVO_TOKEN, "POST", PUBLIC + path, params, nonce),
            "X-Plivo-Signature-V3-Nonce": nonce}  # fmt: skip


def plivo_answer(service: Service, agent: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """Where Plivo posts the answer webhook, its parameters, and its signature headers."""
    path = f"/telephony/plivo/answer?agent={agent}"
    params = {"CallUUID": str(uuid.uuid4()), "From": "14155550100", "To": "14155550199", "Direction": "inbound"}
    return service.url + path, params, plivo_headers(path, params)


def plivo_stream_url(service: Service, agent: str) -> str:
    url, params, headers = plivo_answer(service, agent)
    r = httpx.post(url, data=params, headers=headers)
    assert r.status_code == 200, r.text
    return str(ET.fromstring(r.text)[0].text).replace("wss://parley.example.com", service.url.replace("http", "ws"))


PLIVO_START = json.dumps({"event": "start", "sequenceNumber": 1, "start": {
    "callId": "c1", "streamId": "s1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}})  # fmt: skip


# --- one service with every carrier's secret --------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("replay"), **CARRIERS) as svc:
        yield svc


@pytest.fixture(scope="module")
def agents(service: Service) -> tuple[str, str]:
    """An agent of tenant A and one of tenant B."""
    return make_agent(service, "replay-a"), make_agent(service, "replay-b")


def test_twiml_parameters_open_one_stream(service: Service, agents: tuple[str, str]) -> None:
    params = twilio_voice(service, agents[0])
    url = stream_of(service, "twilio")

    async def six_at_once() -> list[int | str]:
        return list(await asyncio.gather(*(opened(url, [twilio_start(params)]) for _ in range(6))))

    results = asyncio.run(six_at_once())
    assert sorted(results, key=str) == [1008] * 5 + ["open"], results
    assert asyncio.run(opened(url, [twilio_start(params)])) == 1008  # and later, once the first call is over
    assert asyncio.run(opened(url, [twilio_start(twilio_voice(service, agents[0]))])) == "open"  # a fresh answer


def test_a_twilio_voice_webhook_is_answered_once(service: Service, agents: tuple[str, str]) -> None:
    """Twilio signs no time or nonce: the same signed request again would mint fresh stream parameters."""
    sid = "CA" + secrets.token_hex(16)
    assert post_voice(service, agents[0], sid).status_code == 200
    assert post_voice(service, agents[0], sid).status_code == 403
    assert post_voice(service, agents[1], sid).status_code == 403


def test_expired_stream_parameters_are_refused(service: Service, agents: tuple[str, str]) -> None:
    """The expiry is inside the signature: an answer signed long ago (here by hand, with the secret) is refused."""
    base = {"agent": agents[0], "tenant": "", "caller": "+1555", "called": "+1556", "call_sid": "CA9", "call": ""}
    url = stream_of(service, "twilio")
    for exp, expected in ((time.time() - 5, 1008), (time.time() + 60, "open")):
        params = {**base, "exp": str(int(exp)), "nonce": secrets.token_urlsafe(12)}
        params["token"] = stream_token(TWILIO_TOKEN, params)
        assert asyncio.run(opened(url, [twilio_start(params)])) == expected
    stale = twilio_voice(service, agents[0])
    moved = {**stale, "exp": str(int(time.time() + 10_000))}  # a later expiry is not what was signed
    assert asyncio.run(opened(url, [twilio_start(moved)])) == 1008


def test_non_ascii_stream_token_is_a_policy_close(service: Service, agents: tuple[str, str]) -> None:
    params = {**twilio_voice(service, agents[0]), "token": "é" * 64}
    assert asyncio.run(opened(stream_of(service, "twilio"), [twilio_start(params)])) == 1008
    vonage = json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "token": "é"})
    assert asyncio.run(opened(stream_of(service, "vonage"), [vonage])) == 1008


def test_a_second_twilio_start_does_not_take_the_call_over(service: Service, agents: tuple[str, str]) -> None:
    """Another streamSid's start is logged and ignored: the call goes on, on its own streamSid, for 6 s."""
    params = twilio_voice(service, agents[0])

    async def call() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with websockets.connect(stream_of(service, "twilio")) as ws:
            await ws.send(twilio_start(params))
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            await ws.send(twilio_start({**params, "nonce": "x"}, stream_sid="MZ2", seq=2))
            for seq in range(3, 303):  # 6 s of caller audio on the first streamSid
                await ws.send(twilio_media(seq))
                while True:
                    try:
                        got.append(json.loads(await asyncio.wait_for(ws.recv(), 0.02)))
                    except TimeoutError:
                        break
        return got

    got = asyncio.run(call())
    assert len(got) > 50 and {m["streamSid"] for m in got} == {"MZ1"}


def _second_start(protocol: str, seq: int) -> tuple[StreamProtocol, str, str]:
    """A protocol that has started, the start message of another stream, and the id it must keep."""
    if protocol == "twilio":
        return TwilioStream(), twilio_start({}, "MZ1", seq), "MZ1"
    if protocol == "plivo":
        start = json.loads(PLIVO_START)
        return (
            PlivoStream(),
            json.dumps({**start, "sequenceNumber": seq, "start": {**start["start"], "streamId": f"s{seq}"}}),
            "s1",
        )
    start = {"event": "start", "sequence_number": str(seq), "stream_sid": f"e{seq}",
             "start": {"stream_sid": f"e{seq}", "call_sid": "c", "media_format": {"sample_rate": "8000"}}}  # fmt: skip
    return ExotelStream(), json.dumps(start), "e1"


@pytest.mark.parametrize("protocol", ["twilio", "plivo", "exotel"])
def test_a_second_start_is_a_wire_error(protocol: str) -> None:
    proto, first, _ = _second_start(protocol, 1)
    proto.parse(first)
    _, second, kept = _second_start(protocol, 2)
    with pytest.raises(WireError, match="second start"):
        proto.parse(second)
    assert kept in str(proto.mark("p1:5"))  # Parley's messages still name the first stream


def test_vonage_jwt_is_used_once_and_binds_the_agent(service: Service, agents: tuple[str, str]) -> None:
    mine, theirs = agents
    query = vonage_query(mine)
    captured = vonage_jwt(json.dumps(query, separators=(",", ":")).encode())
    assert vonage_get(service, query, captured).status_code == 200
    assert vonage_get(service, query, captured).status_code == 403  # the same request again
    assert vonage_get(service, {**query, "agent": theirs}, captured).status_code == 403  # another agent
    other = vonage_query(theirs)
    forged_hash = vonage_jwt(json.dumps(query, separators=(",", ":")).encode())
    assert vonage_get(service, other, forged_hash).status_code == 403  # a fresh jti, the hash of another query
    assert vonage_get(service, other).status_code == 200  # genuinely signed


def test_vonage_jwt_needs_a_payload_hash_and_a_recent_iat(service: Service, agents: tuple[str, str]) -> None:
    url = f"{service.url}/telephony/vonage/answer"
    body = json.dumps({"to": "447700900000", "from": "447700900001", "uuid": "u1", "agent": agents[0]}).encode()
    assert httpx.post(url, content=body, headers=vonage_jwt(None)).status_code == 403  # no payload_hash
    assert httpx.post(url, content=body, headers=vonage_jwt(body, iat=time.time() - 400)).status_code == 403
    assert httpx.post(url, content=body, headers=vonage_jwt(body, iat=time.time() + 3600)).status_code == 403
    assert httpx.post(url, content=body, headers=vonage_jwt(body)).status_code == 200
    # a hash of the body alone does not cover the query: ?agent= is ignored (the number is not mapped: 404)
    plain = json.dumps({"to": "447700900999", "from": "447700900001", "uuid": "u2"}).encode()
    r = httpx.post(f"{url}?agent={agents[1]}", content=plain, headers=vonage_jwt(plain))
    assert r.status_code == 404, r.text


def test_vonage_answer_opens_one_stream(service: Service, agents: tuple[str, str]) -> None:
    endpoint = vonage_get(service, vonage_query(agents[0])).json()[0]["endpoint"][0]
    assert len(json.dumps(endpoint["headers"])) <= 512  # Vonage's limit
    hello = json.dumps({"event": "websocket:connected", "content-type": endpoint["content-type"],
                        **endpoint["headers"]})  # fmt: skip
    assert asyncio.run(opened(stream_of(service, "vonage"), [hello])) == "open"
    assert asyncio.run(opened(stream_of(service, "vonage"), [hello])) == 1008


def test_plivo_nonce_is_used_once(service: Service, agents: tuple[str, str]) -> None:
    url, params, headers = plivo_answer(service, agents[0])
    assert httpx.post(url, data=params, headers=headers).status_code == 200
    for _ in range(3):
        assert httpx.post(url, data=params, headers=headers).status_code == 403
    fresh = plivo_headers(url.removeprefix(service.url), params)
    assert httpx.post(url, data=params, headers=fresh).status_code == 200


def test_plivo_stream_url_opens_one_stream(service: Service, agents: tuple[str, str]) -> None:
    url = plivo_stream_url(service, agents[0])
    assert asyncio.run(opened(url, [PLIVO_START])) == "open"
    assert asyncio.run(opened(url, [PLIVO_START])) == 1008
    assert {"exp", "nonce", "token"} <= dict(parse_qsl(urlsplit(url).query)).keys()


def test_non_ascii_credentials_are_403_not_500(service: Service, agents: tuple[str, str]) -> None:
    r = httpx.get(f"{service.url}/telephony/exotel/status", params={"call": "x", "token": "é"})
    assert r.status_code == 403
    url, params, headers = plivo_answer(service, agents[0])
    bad = [(k.encode(), v.encode()) for k, v in headers.items() if k != "X-Plivo-Signature-V3"]
    bad.append((b"X-Plivo-Signature-V3", "é".encode()))  # raw UTF-8 bytes, as a forged request sends them
    assert httpx.post(url, data=params, headers=bad).status_code == 403
    odd_nonce = [(b"X-Plivo-Signature-V3", b"x"), (b"X-Plivo-Signature-V3-Nonce", "é\u2028".encode())]
    assert httpx.post(url, data=params, headers=odd_nonce).status_code == 403
    vonage = f"{service.url}/telephony/vonage/answer"
    assert httpx.get(vonage, headers=[(b"Authorization", "Bearer é.é.é".encode())]).status_code == 403
    twilio = f"{service.url}/telephony/twilio/voice?agent={agents[0]}"
    assert (
        httpx.post(twilio, data={"CallSid": "CA1"}, headers=[(b"X-Twilio-Signature", "é".encode())]).status_code == 403
    )


def test_unconfigured_exotel_believes_no_callback(service: Service) -> None:
    """Without Exotel's API token there is no key: a token computed with an empty one is refused."""
    call = str(uuid.uuid4())
    token = hmac.new(b"", f"exotel-status:{call}".encode(), hashlib.sha256).hexdigest()[:32]
    r = httpx.post(f"{service.url}/telephony/exotel/status?{urlencode({'call': call, 'token': token})}",
                   data={"CallSid": "x", "Status": "completed"})  # fmt: skip
    assert r.status_code == 403


def test_refused_handshakes_are_http_403(service: Service) -> None:
    """As docs/telephony/*.md say: a handshake refused on its credentials never opens (HTTP 403)."""

    async def handshake() -> None:
        async with websockets.connect(stream_of(service, "twilio"), additional_headers={"X-Twilio-Signature": "x"}):
            pass

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(handshake())
    assert refused.value.response.status_code == 403


# --- rate limits ----------------------------------------------------------------------------------------


def test_webhooks_and_handshakes_are_rate_limited(tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {**CARRIERS, "PARLEY_TELEPHONY_RATE_LIMIT": "10/minute"}  # an unconfigured carrier refuses all anyway
    with running_service(tmp_path_factory.mktemp("limited"), **env) as svc:
        status = {"CallUUID": "x"}  # signed as Plivo signs it, each with a fresh nonce: only the limit refuses
        codes = [httpx.post(f"{svc.url}/telephony/plivo/status", data=status,
                            headers=plivo_headers("/telephony/plivo/status", status)).status_code
                 for _ in range(12)]  # fmt: skip
        assert codes[:10] == [204] * 10 and codes[10:] == [429, 429], codes
        with httpx.Client() as c:
            assert c.post(f"{svc.url}/telephony/twilio/voice").headers.get("retry-after")

        async def handshake() -> None:
            async with websockets.connect(stream_of(svc, "asterisk").replace("/stream", "/media")):
                pass

        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(handshake())
        assert refused.value.response.status_code == 403
        with svc.client() as c:
            assert c.get("/health").status_code == 200  # the API is not what is limited


# --- two workers sharing Redis ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[list[Service]]:
    """Two `parley serve` workers sharing PostgreSQL and Redis, as a load-balanced install runs."""
    with backend_env("postgres+redis", request) as env, ExitStack() as stack:
        envs = [{**env, **CARRIERS, "PARLEY_WORKER_ID": name} for name in ("replay-w1", "replay-w2")]
        yield [stack.enter_context(running_service(tmp_path_factory.mktemp("worker"), **e)) for e in envs]


def test_a_replay_on_another_worker_is_refused(workers: list[Service]) -> None:
    first, second = workers
    agent = make_agent(first, "replay-redis")
    params = twilio_voice(first, agent)
    assert asyncio.run(opened(stream_of(first, "twilio"), [twilio_start(params)])) == "open"
    assert asyncio.run(opened(stream_of(second, "twilio"), [twilio_start(params)])) == 1008
    assert asyncio.run(opened(stream_of(second, "twilio"), [twilio_start(twilio_voice(first, agent))])) == "open"

    url, form, headers = plivo_answer(first, agent)
    assert httpx.post(url, data=form, headers=headers).status_code == 200
    on_second = url.replace(first.url, second.url)  # the same signed request (Plivo signs the public URL)
    assert httpx.post(on_second, data=form, headers=headers).status_code == 403

    query = vonage_query(agent)
    captured = vonage_jwt(json.dumps(query, separators=(",", ":")).encode())
    assert vonage_get(first, query, captured).status_code == 200
    assert vonage_get(second, query, captured).status_code == 403
    assert vonage_get(second, vonage_query(agent)).status_code == 200

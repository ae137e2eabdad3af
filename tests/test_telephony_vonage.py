"""Vonage: the WebSocket wire format, the answer/event webhooks, outbound calls, and one call end to end.

Messages are written as Vonage's WebSocket guide shows them
(developer.vonage.com/voice/voice-api/concepts/websockets). The outbound-call test
points PARLEY_VONAGE_API_BASE_URL at a local HTTP server that speaks the Voice API's
documented wire format (``POST /v1/calls`` with an application JWT → ``201 {"uuid"}``,
developer.vonage.com/api/voice#createCall). The call is a real `parley serve`, a real
WebSocket client in Vonage's place, and real speech from espeak-ng.

The carriers' side shared by every provider test lives in tests/support/telephony.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from parley.telephony.stream import Dtmf, Info, MarkPlayed, Media, StreamStart, WireError
from parley.telephony.vonage import VonageStream

from .support.service import Service
from .support.telephony import (
    FUZZ,
    FakeApi,
    Message,
    assert_conversation,
    finished_call,
    frames,
    fuzz,
    speech,
    talk,
    wire_messages,
)

# --- wire format --------------------------------------------------------------------------------------


def connected(**headers: str) -> str:
    # "First message" in the WebSocket guide: the endpoint's headers at the top level
    return json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000", **headers})


def test_documented_messages_map_to_events() -> None:
    p = VonageStream()
    (start,) = p.parse(connected(caller="447700900123", called="447700900000", call_uuid="aaaa-bbbb", agent="x"))
    assert isinstance(start, StreamStart)
    assert (start.caller, start.called, start.provider_call_id) == ("447700900123", "447700900000", "aaaa-bbbb")
    assert start.params["agent"] == "x" and p.sample_rate == 16000
    frame = bytes(range(256)) * 2 + bytes(128)  # one 640-byte binary message: 20 ms of 16 kHz L16
    assert p.parse(frame) == [Media(frame)]
    # "DTMF events": {"event":"websocket:dtmf","digit":"5","duration":260}
    assert p.parse('{"event":"websocket:dtmf","digit":"5","duration":260}') == [Dtmf("5")]
    assert p.parse('{"event":"websocket:notify","payload":{"name":"p1:5"}}') == [MarkPlayed("p1:5")]
    assert p.parse('{"event":"websocket:cleared"}') == [Info("websocket:cleared")]


def test_8khz_content_type_sets_the_call_rate() -> None:
    p = VonageStream()
    p.parse(json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=8000"}))
    assert p.sample_rate == 8000


def test_outgoing_messages() -> None:
    p = VonageStream()
    pcm = bytes(640)
    assert p.audio(pcm) == [pcm]  # binary, same format and size as what Vonage sends
    assert json.loads(str(p.clear())) == {"action": "clear"}
    assert json.loads(str(p.mark("p3:15"))) == {"action": "notify", "payload": {"name": "p3:15"}}
    assert p.hangup() is None  # closing the socket ends the NCCO's connect


@pytest.mark.parametrize(
    "message",
    [b"\x00\x01", '{"event":"websocket:dtmf","digit":"5"}', "not json", "[1,2]", '{"digit":"5"}'],
)
def test_out_of_order_and_garbage_is_a_wire_error(message: Message) -> None:
    with pytest.raises(WireError):
        VonageStream().parse(message)


def test_bad_values_after_start_are_wire_errors() -> None:
    p = VonageStream()
    p.parse(connected())
    bad_messages: list[Message] = [b"\x00", '{"event":"websocket:dtmf","digit":"55"}', json.dumps({"event": 5})]
    for bad in bad_messages:
        with pytest.raises(WireError):
            p.parse(bad)
    with pytest.raises(WireError):
        VonageStream().parse(json.dumps({"event": "websocket:connected", "content-type": "audio/pcmu"}))


VONAGE_EVENTS = ["websocket:connected", "websocket:dtmf", "websocket:notify", "websocket:cleared"]
VONAGE_KEYS = ["content-type", "digit", "duration", "payload", "call_uuid", "caller"]


@FUZZ
@given(st.lists(wire_messages(VONAGE_EVENTS, VONAGE_KEYS), max_size=8))
def test_fuzzed_messages_raise_only_wire_errors(messages: list[Message]) -> None:
    fuzz(VonageStream, [connected(), *messages])
    fuzz(VonageStream, messages)


# --- a real service -------------------------------------------------------------------------------------

SECRET = "vonage-signature-secret-for-tests"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
OTHER_SECRET = "not-the-vonage-signature-secret!!"
CALL_UUID = "63f61863-4a51-4f6b-86e1-46edebcf9356"


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def vonage_api(private_key: rsa.RSAPrivateKey) -> Iterator[FakeApi]:
    public = private_key.public_key()

    def reply(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, public, algorithms=["RS256"])
        except jwt.PyJWTError:
            return 401, {"title": "Unauthorized", "detail": "bad JWT"}
        if claims.get("application_id") != APP_ID:
            return 401, {"title": "Unauthorized", "detail": "wrong application"}
        if method == "POST" and path == "/v1/calls":
            # "Create an outbound call" response, as documented
            created = {"uuid": CALL_UUID, "status": "started", "direction": "outbound",
                       "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22"}  # fmt: skip
            return 201, created
        return 404, {"title": "Not found"}

    api = FakeApi(reply)
    yield api
    api.close()


@pytest.fixture(scope="module")
def service_env(
    tmp_path_factory: pytest.TempPathFactory, private_key: rsa.RSAPrivateKey, vonage_api: FakeApi
) -> dict[str, str]:
    """The settings of the module's `parley serve` (the shared ``service``, ``key`` and ``agent`` use them)."""
    key_path = tmp_path_factory.mktemp("vonage") / "private.key"
    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    key_path.write_bytes(private_key.private_bytes(*pem))
    return {"PARLEY_VONAGE_SIGNATURE_SECRET": SECRET, "PARLEY_VONAGE_APPLICATION_ID": APP_ID,
            "PARLEY_VONAGE_PRIVATE_KEY_PATH": str(key_path), "PARLEY_VONAGE_API_BASE_URL": vonage_api.url}  # fmt: skip


def signed(body: bytes = b"", secret: str = SECRET, query: dict[str, str] | None = None) -> dict[str, str]:
    """What Vonage sends on a signed webhook: a JWT (HS256, signature secret, a fresh jti) with the payload's
    hash: of the body for POST, of the query parameters as a compact JSON object for GET."""
    claims: dict[str, Any] = {"iat": int(time.time()), "jti": uuid.uuid4().hex, "iss": "Vonage"}
    if body:
        claims["payload_hash"] = hashlib.sha256(body).hexdigest()
    elif query:
        claims["payload_hash"] = hashlib.sha256(json.dumps(query, separators=(",", ":")).encode()).hexdigest()
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}


def test_answer_url_returns_a_websocket_ncco(service: Service, agent: dict[str, Any]) -> None:
    query = {"to": "447700900000", "from": "447700900001", "uuid": "aaaaaaaa-bbbb", "agent": agent["name"]}
    r = httpx.get(f"{service.url}/telephony/vonage/answer", params=query, headers=signed(query=query))
    assert r.status_code == 200, r.text
    (connect,) = r.json()
    assert connect["action"] == "connect"
    (endpoint,) = connect["endpoint"]
    assert endpoint["type"] == "websocket" and endpoint["content-type"] == "audio/l16;rate=16000"
    assert endpoint["uri"] == service.url.replace("http", "ws") + "/telephony/vonage/stream"
    headers = endpoint["headers"]
    assert headers["agent"] == agent["id"] and headers["caller"] == "447700900001" and headers["token"]
    assert len(json.dumps(headers)) <= 512  # Vonage's limit for endpoint headers

    body = json.dumps({**query, "conversation_uuid": "CON-1"}).encode()
    post = httpx.post(f"{service.url}/telephony/vonage/answer", content=body, headers=signed(body))
    assert post.status_code == 200 and post.json()[0]["endpoint"][0]["headers"]["agent"] == agent["id"]


def test_unsigned_forged_or_tampered_webhooks_are_refused(service: Service, agent: dict[str, Any]) -> None:
    url = f"{service.url}/telephony/vonage/answer"
    assert httpx.get(url, params={"agent": agent["id"]}).status_code == 403
    query = {"agent": agent["id"]}
    assert httpx.get(url, params=query, headers=signed(secret=OTHER_SECRET, query=query)).status_code == 403
    body = json.dumps({"agent": agent["id"], "to": "1"}).encode()
    assert httpx.post(url, content=body, headers=signed(b'{"agent":"other"}')).status_code == 403


def test_unknown_agent_is_404(service: Service) -> None:
    query = {"agent": "nobody"}
    r = httpx.get(f"{service.url}/telephony/vonage/answer", params=query, headers=signed(query=query))
    assert r.status_code == 404 and r.json()[0]["action"] == "talk"


def test_outbound_call_and_its_failure(service: Service, key: str, agent: dict[str, Any], vonage_api: FakeApi) -> None:
    with service.client(key) as c:
        r = c.post("/v1/calls", json={"agent_id": agent["id"], "to": "+447700900002", "from": "+447700900000",
                                      "provider": "vonage"})  # fmt: skip
        assert r.status_code == 201, r.text
        call = r.json()
    assert call["status"] == "dialing" and call["provider_call_id"] == CALL_UUID
    method, path, _, body = vonage_api.requests[-1]
    sent = json.loads(body)
    assert (method, path) == ("POST", "/v1/calls")
    assert sent["to"] == [{"type": "phone", "number": "447700900002"}] and sent["from"]["number"] == "447700900000"
    assert sent["answer_url"][0].startswith(f"{service.url}/telephony/vonage/answer?")
    assert f"call={call['id']}" in sent["answer_url"][0]

    event = json.dumps({"status": "busy", "uuid": call["provider_call_id"], "direction": "outbound"}).encode()
    assert httpx.post(f"{service.url}/telephony/vonage/event", content=event, headers=signed(event)).status_code == 204
    with service.client(key) as c:
        detail = c.get(f"/v1/calls/{call['id']}").json()
    assert detail["status"] == "failed" and detail["end_reason"] == "busy"
    assert any(e["kind"] == "carrier_status" and e["data"]["status"] == "busy" for e in detail["events"])
    with service.client(key) as c:
        c.delete(f"/v1/calls/{call['id']}")


def test_a_call_over_the_websocket(service: Service, key: str, agent: dict[str, Any]) -> None:
    query = {"to": "447700900000", "from": "447700900123", "uuid": "4c3b2a10-0000-4000-8000-000000000001",
             "agent": agent["id"]}  # fmt: skip
    ncco = httpx.get(f"{service.url}/telephony/vonage/answer", params=query, headers=signed(query=query)).json()
    endpoint = ncco[0]["endpoint"][0]
    pcm = speech(16000)

    def vonage(message: Message) -> list[Message]:
        # Vonage echoes a notify once the audio before it has played (here: at once)
        if isinstance(message, str) and json.loads(message).get("action") == "notify":
            return [json.dumps({"event": "websocket:notify", "payload": json.loads(message)["payload"]})]
        return []

    opening: list[Message] = [json.dumps({"event": "websocket:connected", "content-type": endpoint["content-type"],
                                          **endpoint["headers"]})]  # fmt: skip
    got = asyncio.run(talk(endpoint["uri"], opening, list(frames(pcm, 16000)), vonage))

    audio = [m for m in got if isinstance(m, bytes)]
    assert len(audio) > 50 and {len(m) for m in audio} == {640}  # seconds of agent speech, 20 ms per message
    assert any(isinstance(m, str) and json.loads(m)["action"] == "notify" for m in got)
    call = finished_call(service, key, "vonage")
    assert call["caller"] == "447700900123" and call["called"] == "447700900000"
    assert call["provider_call_id"] == query["uuid"]
    assert_conversation(call, "vonage")


def test_forged_stream_parameters_are_refused(service: Service, agent: dict[str, Any]) -> None:
    async def forged() -> None:
        url = service.url.replace("http", "ws") + "/telephony/vonage/stream"
        async with websockets.connect(url) as ws:
            await ws.send(connected(agent=agent["id"], token="0" * 64))
            await asyncio.wait_for(ws.recv(), 5)

    with pytest.raises(ConnectionClosed) as closed:
        asyncio.run(forged())
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_machine_detection_is_asked_and_its_result_recorded(service: Service, key: str, agent: dict[str, Any],
                                                            vonage_api: FakeApi) -> None:  # fmt: skip
    """Advanced machine detection on the dial (detect_beep: a voicemail message is to be left); the event
    webhook's ``status: machine`` becomes the call's ``machine_detection`` event (parley.telephony.amd)."""
    with service.client(key) as c:
        r = c.post("/v1/calls", json={"agent_id": agent["id"], "to": "+447700900003", "from": "+447700900000",
                                      "provider": "vonage", "machine_detection": True,
                                      "variables": {"_voicemail": "Please call back."}})  # fmt: skip
        assert r.status_code == 201, r.text
        call = r.json()
    sent = json.loads(vonage_api.requests[-1][3])
    assert sent["advanced_machine_detection"] == {"behavior": "continue", "mode": "detect_beep", "beep_timeout": 45}
    event = json.dumps({"status": "machine", "sub_state": "beep_start", "uuid": CALL_UUID}).encode()
    assert httpx.post(f"{service.url}/telephony/vonage/event", content=event, headers=signed(event)).status_code == 204
    with service.client(key) as c:
        detail = c.get(f"/v1/calls/{call['id']}").json()
        c.delete(f"/v1/calls/{call['id']}")
    found = [e["data"] for e in detail["events"] if e["kind"] == "machine_detection"]
    assert found == [{"type": "machine_detection", "carrier": "vonage", "answered_by": "machine", "detail": "machine"}]

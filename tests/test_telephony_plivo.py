"""Plivo: the Audio Streaming wire format, signed webhooks (V3), outbound calls, and one call end to end.

Messages are written as Plivo's Stream Event Protocol shows them
(plivo.com/docs/voice/audio-streaming/audio-streaming: start, media, dtmf,
playedStream, clearedAudio; playAudio, checkpoint, clearAudio). Signatures follow
plivo.com/docs/voice/concepts/signature-validation. The outbound-call test points
PARLEY_PLIVO_API_BASE_URL at a local HTTP server that speaks Plivo's documented Call
API (``POST /v1/Account/{auth_id}/Call/`` with basic auth → ``201 {"request_uuid"}``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16
from parley.telephony.plivo import PlivoStream, signature_v3
from parley.telephony.stream import Dtmf, Info, MarkPlayed, Media, Stop, StreamStart, WireError

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

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
AUTH_TOKEN = "plivo-auth-token-for-tests"
STREAM_ID = "87654321-4321-4321-4321-cba987654321"
CALL_ID = "12345678-1234-1234-1234-123456789abc"


def start_event(seq: int = 1) -> str:
    # "start" as documented, sent once when the connection opens
    return json.dumps({
        "event": "start", "sequenceNumber": seq,
        "start": {"callId": CALL_ID, "streamId": STREAM_ID, "accountId": AUTH_ID, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
        "extra_headers": "userId=12345;sessionId=abc-xyz",
    })  # fmt: skip


def media_event(ulaw: bytes, seq: int, chunk: int) -> str:
    return json.dumps({
        "event": "media", "sequenceNumber": seq, "streamId": STREAM_ID,
        "media": {"track": "inbound", "timestamp": str(1705312200000 + 20 * chunk), "chunk": chunk,
                  "payload": base64.b64encode(ulaw).decode()},
        "extra_headers": "userId=12345;sessionId=abc-xyz",
    })  # fmt: skip


# --- wire format --------------------------------------------------------------------------------------


def test_documented_messages_map_to_events() -> None:
    p = PlivoStream({"agent": "a", "caller": "14155550100", "called": "14155550199"})
    (start,) = p.parse(start_event())
    assert isinstance(start, StreamStart) and start.provider_call_id == CALL_ID and start.stream_id == STREAM_ID
    assert (start.caller, start.called, start.params["agent"]) == ("14155550100", "14155550199", "a")
    ulaw = bytes(range(160))
    assert p.parse(media_event(ulaw, 2, 1)) == [Media(ulaw_to_pcm16(ulaw))]
    dtmf = {"event": "dtmf", "sequenceNumber": 3, "streamId": STREAM_ID,
            "dtmf": {"track": "inbound", "digit": "5", "timestamp": "1705312201000"}}  # fmt: skip
    assert p.parse(json.dumps(dtmf)) == [Dtmf("5")]
    played = {"event": "playedStream", "sequenceNumber": 4, "streamId": STREAM_ID, "name": "p1:5"}
    assert p.parse(json.dumps(played)) == [MarkPlayed("p1:5")]
    cleared = {"event": "clearedAudio", "sequenceNumber": 5, "streamId": STREAM_ID}
    assert p.parse(json.dumps(cleared)) == [Info("clearedAudio")]
    assert p.parse(json.dumps({"event": "stop", "sequenceNumber": 6, "streamId": STREAM_ID})) == [Stop()]


def test_outgoing_messages() -> None:
    p = PlivoStream()
    p.parse(start_event())
    pcm = bytes(320)
    (play,) = p.audio(pcm)
    media = {
        "contentType": "audio/x-mulaw",
        "sampleRate": 8000,
        "payload": base64.b64encode(pcm16_to_ulaw(pcm)).decode(),
    }
    assert json.loads(play) == {"event": "playAudio", "media": media}
    assert json.loads(str(p.mark("p2:10"))) == {"event": "checkpoint", "streamId": STREAM_ID, "name": "p2:10"}
    assert json.loads(str(p.clear())) == {"event": "clearAudio", "streamId": STREAM_ID}
    assert p.hangup() is None


def test_out_of_order_and_garbage_is_a_wire_error() -> None:
    p = PlivoStream()
    with pytest.raises(WireError):
        p.parse(media_event(b"\xff" * 160, 2, 1))  # before start
    p.parse(start_event(seq=5))
    bad: list[Message] = [media_event(b"\xff", 4, 1), b"binary", "{", json.dumps({"event": "media", "media": 1}),
                          json.dumps({"event": "playAudio", "sequenceNumber": 9})]  # fmt: skip
    for m in bad:
        with pytest.raises(WireError):
            p.parse(m)


EVENTS = ["start", "media", "dtmf", "playedStream", "clearedAudio", "stop"]
KEYS = ["sequenceNumber", "streamId", "start", "media", "dtmf", "name"]


@FUZZ
@given(st.lists(wire_messages(EVENTS, KEYS), max_size=8))
def test_fuzzed_messages_raise_only_wire_errors(messages: list[Message]) -> None:
    fuzz(PlivoStream, [start_event(), *messages])
    fuzz(PlivoStream, messages)


def test_signature_v3_follows_the_documented_assembly() -> None:
    """URL (with its query), then the POST parameters sorted by name as name+value, then '.' and the nonce."""
    params = {"To": "14155550199", "From": "14155550100", "CallUUID": CALL_ID}
    text = f"https://example.com/answer?CallUUID{CALL_ID}From14155550100To14155550199.05429567804466091622"
    expected = base64.b64encode(hmac.new(b"token", text.encode(), hashlib.sha256).digest()).decode()
    assert signature_v3("token", "POST", "https://example.com/answer", params, "05429567804466091622") == expected
    text = "https://example.com/answer?a=1&b=2.123"
    expected = base64.b64encode(hmac.new(b"token", text.encode(), hashlib.sha256).digest()).decode()
    assert signature_v3("token", "GET", "https://example.com/answer?b=2&a=1", {}, "123") == expected


# --- a real service ---------------------------------------------------------------------------------------

REQUEST_UUID = "9834029e-58b6-11e1-b8b7-a5bd0e4e126f"


@pytest.fixture(scope="module")
def plivo_api() -> Iterator[FakeApi]:
    expected_auth = "Basic " + base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()

    def reply(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if headers.get("authorization") != expected_auth:
            return 401, {"error": "authentication failed"}
        if method == "POST" and path == f"/v1/Account/{AUTH_ID}/Call/":
            return 201, {"message": "call fired", "request_uuid": REQUEST_UUID, "api_id": "97ceeb52-58b6-11e1"}
        if method == "POST" and path.startswith(f"/v1/Account/{AUTH_ID}/Call/"):
            return 202, {"message": "call transferred", "api_id": "08c94608-58bd-11e1"}
        return 404, {"error": "not found"}

    api = FakeApi(reply)
    yield api
    api.close()


@pytest.fixture(scope="module")
def service_env(plivo_api: FakeApi) -> dict[str, str]:
    """The settings of the module's `parley serve` (the shared ``service``, ``key`` and ``agent`` use them)."""
    return {"PARLEY_PLIVO_AUTH_ID": AUTH_ID, "PARLEY_PLIVO_AUTH_TOKEN": AUTH_TOKEN,
            "PARLEY_PLIVO_API_BASE_URL": plivo_api.url}  # fmt: skip


def plivo_post(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> httpx.Response:
    """A webhook as Plivo sends it: form-encoded, with X-Plivo-Signature-V3 and its nonce."""
    nonce = secrets.token_hex(10)
    signature = signature_v3(token, "POST", url, params, nonce)
    return httpx.post(
        url, data=params, headers={"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}
    )


def answer_params(**extra: str) -> dict[str, str]:
    return {"CallUUID": CALL_ID, "From": "14155550100", "To": "14155550199", "Direction": "inbound",
            "CallStatus": "in-progress", **extra}  # fmt: skip


def test_answer_url_returns_stream_xml(service: Service, agent: dict[str, Any]) -> None:
    r = plivo_post(f"{service.url}/telephony/plivo/answer?agent={agent['id']}", answer_params())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml"), r.text
    root = ET.fromstring(r.text)
    (stream,) = root
    assert root.tag == "Response" and stream.tag == "Stream"
    assert stream.attrib["bidirectional"] == "true" and stream.attrib["keepCallAlive"] == "true"
    assert stream.attrib["contentType"] == "audio/x-mulaw;rate=8000"
    url = urlsplit(str(stream.text))
    query = dict(parse_qsl(url.query))
    assert url.path == "/telephony/plivo/stream" and query["agent"] == agent["id"] and query["token"]
    assert query["caller"] == "14155550100" and query["called"] == "14155550199"


def test_bad_signature_is_403_and_unknown_agent_404(service: Service, agent: dict[str, Any]) -> None:
    url = f"{service.url}/telephony/plivo/answer?agent={agent['id']}"
    assert plivo_post(url, answer_params(), token="wrong").status_code == 403
    assert httpx.post(url, data=answer_params()).status_code == 403
    missing = plivo_post(f"{service.url}/telephony/plivo/answer?agent=nobody", answer_params())
    assert missing.status_code == 404 and "<Hangup/>" in missing.text


def test_transfer_xml_dials_the_target(service: Service) -> None:
    r = plivo_post(f"{service.url}/telephony/plivo/transfer?to=%2B14155550111", {"CallUUID": CALL_ID})
    assert ET.fromstring(r.text).find("Dial/Number").text == "14155550111"  # type: ignore[union-attr]


def test_outbound_call_and_its_failure(service: Service, key: str, agent: dict[str, Any], plivo_api: FakeApi) -> None:
    with service.client(key) as c:
        r = c.post("/v1/calls", json={"agent_id": agent["id"], "to": "+14155550123", "from": "+14155550100",
                                      "provider": "plivo"})  # fmt: skip
        assert r.status_code == 201, r.text
        call = r.json()
    assert call["status"] == "dialing" and call["provider_call_id"] == REQUEST_UUID
    method, path, _, body = plivo_api.requests[-1]
    sent = json.loads(body)
    assert (method, path) == ("POST", f"/v1/Account/{AUTH_ID}/Call/")
    assert sent["to"] == "14155550123" and sent["from"] == "14155550100" and f"call={call['id']}" in sent["answer_url"]
    hangup = {"RequestUUID": REQUEST_UUID, "CallUUID": "c2", "CallStatus": "busy", "HangupCause": "USER_BUSY"}
    assert plivo_post(sent["hangup_url"], hangup).status_code == 204
    with service.client(key) as c:
        detail = c.get(f"/v1/calls/{call['id']}").json()
        assert detail["status"] == "failed" and detail["end_reason"] == "busy"
        c.delete(f"/v1/calls/{call['id']}")


def test_a_call_over_the_websocket(service: Service, key: str, agent: dict[str, Any]) -> None:
    xml = plivo_post(f"{service.url}/telephony/plivo/answer?agent={agent['name']}", answer_params()).text
    url = str(ET.fromstring(xml)[0].text)
    media: list[Message] = [
        media_event(pcm16_to_ulaw(f), seq, seq - 1) for seq, f in enumerate(frames(speech(8000), 8000), start=2)
    ]

    def plivo(message: Message) -> list[Message]:
        data = json.loads(message)
        if data["event"] == "checkpoint":  # played at once: Plivo answers with playedStream
            return [json.dumps({"event": "playedStream", "streamId": STREAM_ID, "name": data["name"]})]
        return []

    got = asyncio.run(talk(url, [start_event()], media, plivo))
    plays = [json.loads(m) for m in got if json.loads(m)["event"] == "playAudio"]
    assert len(plays) > 50 and {len(base64.b64decode(p["media"]["payload"])) for p in plays} == {160}
    assert {(p["media"]["contentType"], p["media"]["sampleRate"]) for p in plays} == {("audio/x-mulaw", 8000)}
    assert any(json.loads(m)["event"] == "checkpoint" for m in got)
    call = finished_call(service, key, "plivo")
    assert (call["caller"], call["called"], call["provider_call_id"]) == ("14155550100", "14155550199", CALL_ID)
    assert_conversation(call, "plivo")


def test_machine_detection_is_asked_and_its_result_recorded(service: Service, key: str, agent: dict[str, Any],
                                                            plivo_api: FakeApi) -> None:  # fmt: skip
    """``machine_detection`` on the dial, its result (``Machine``) posted to the status webhook, recorded as the
    call's ``machine_detection`` event (parley.telephony.amd)."""
    with service.client(key) as c:
        r = c.post("/v1/calls", json={"agent_id": agent["id"], "to": "+14155550124", "from": "+14155550100",
                                      "provider": "plivo", "machine_detection": True})  # fmt: skip
        assert r.status_code == 201, r.text
        call = r.json()
    sent = json.loads(plivo_api.requests[-1][3])
    assert sent["machine_detection"] == "true" and sent["machine_detection_url"] == sent["hangup_url"]
    result = {"RequestUUID": REQUEST_UUID, "CallUUID": "c3", "Machine": "true"}
    assert plivo_post(sent["machine_detection_url"], result).status_code == 204
    with service.client(key) as c:
        detail = c.get(f"/v1/calls/{call['id']}").json()
        c.delete(f"/v1/calls/{call['id']}")
    found = [e["data"] for e in detail["events"] if e["kind"] == "machine_detection"]
    assert [(d["carrier"], d["answered_by"]) for d in found] == [("plivo", "machine")]
    assert detail["status"] == "dialing"  # the result is no status: the call goes on

"""Exotel: the Voicebot applet's stream wire format, its Basic auth, outbound calls, and one call end to end.

Messages are written as Exotel's AgentStream guide shows them
(developer.exotel.com/docs/agentstream/stream-voicebot-applet: connected, start,
media, dtmf, mark, stop from Exotel; media, mark, clear to it). The outbound-call test
points PARLEY_EXOTEL_API_BASE_URL at a local HTTP server that speaks Exotel's documented
"Connect Voice AI" API (``POST /v1/accounts/{sid}/calls/connect``, HTTP Basic with the
API key and token, form fields → ``{"call": {"sid": …}}``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus

from parley.telephony.exotel import ExotelStream
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

SID = "exotel-account-sid"
API_KEY = "exotel-api-key"
API_TOKEN = "exotel-api-token/with+odd=chars"
STREAM_SID = "a7d1f5c0e2b3"
CALL_SID = "b5c3e1f2d4a6"


def start_event(rate: str = "8000", **custom: str) -> str:
    # "start" as documented: call and media metadata, custom_parameters from the applet URL
    return json.dumps({
        "event": "start", "sequence_number": "1", "stream_sid": STREAM_SID,
        "start": {"stream_sid": STREAM_SID, "call_sid": CALL_SID, "account_sid": SID, "from": "09876543210",
                  "to": "08047491899", "custom_parameters": custom,
                  "media_format": {"encoding": "base64", "sample_rate": rate, "bit_rate": "128kbps"}},
    })  # fmt: skip


def media_event(pcm: bytes, seq: int) -> str:
    return json.dumps({"event": "media", "sequence_number": str(seq), "stream_sid": STREAM_SID,
                       "media": {"chunk": str(seq - 1), "timestamp": str(20 * seq),
                                 "payload": base64.b64encode(pcm).decode()}})  # fmt: skip


# --- wire format --------------------------------------------------------------------------------------


def test_documented_messages_map_to_events() -> None:
    p = ExotelStream({"agent": "from-the-url"})
    assert p.parse(json.dumps({"event": "connected"})) == [Info("connected")]
    (start,) = p.parse(start_event(agent="from-exotel", tenant="t"))
    assert isinstance(start, StreamStart) and start.provider_call_id == CALL_SID
    assert (start.caller, start.called) == ("09876543210", "08047491899")
    assert start.params == {"agent": "from-the-url", "tenant": "t"}  # the URL Parley was reached at wins
    pcm = bytes(range(256)) + bytes(64)  # 320 bytes: 20 ms of 8 kHz 16-bit PCM
    assert p.parse(media_event(pcm, 2)) == [Media(pcm)]
    dtmf = {"event": "dtmf", "sequence_number": "3", "stream_sid": STREAM_SID, "dtmf": {"digit": "7", "duration": "80"}}
    assert p.parse(json.dumps(dtmf)) == [Dtmf("7")]
    mark = {"event": "mark", "sequence_number": "4", "stream_sid": STREAM_SID, "mark": {"name": "p1:5"}}
    assert p.parse(json.dumps(mark)) == [MarkPlayed("p1:5")]
    stop = {"event": "stop", "sequence_number": "5", "stream_sid": STREAM_SID,
            "stop": {"call_sid": CALL_SID, "account_sid": SID, "reason": "callended"}}  # fmt: skip
    assert p.parse(json.dumps(stop)) == [Stop("caller-hangup")]


def test_16khz_streams_set_the_call_rate() -> None:
    p = ExotelStream()
    p.parse(start_event(rate="16000"))
    assert p.sample_rate == 16000
    with pytest.raises(WireError):
        ExotelStream().parse(start_event(rate="24000"))


def test_outgoing_messages() -> None:
    p = ExotelStream()
    p.parse(start_event())
    pcm = bytes(320)
    (media,) = p.audio(pcm)
    sent = json.loads(media)
    assert sent == {"event": "media", "stream_sid": STREAM_SID, "media": {"payload": base64.b64encode(pcm).decode()}}
    assert len(base64.b64decode(sent["media"]["payload"])) % 320 == 0  # Exotel: chunks in multiples of 320 bytes
    assert json.loads(str(p.mark("p1:5"))) == {"event": "mark", "stream_sid": STREAM_SID, "mark": {"name": "p1:5"}}
    assert json.loads(str(p.clear())) == {"event": "clear", "stream_sid": STREAM_SID}
    assert p.hangup() is None


def test_out_of_order_and_garbage_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        ExotelStream().parse(media_event(bytes(320), 2))  # before start
    p = ExotelStream()
    p.parse(start_event())
    bad: list[Message] = [media_event(bytes(320), 1), media_event(b"\x01", 9), b"\x00", "[]",
                          json.dumps({"event": "dtmf", "sequence_number": "x"})]  # fmt: skip
    for m in bad:
        with pytest.raises(WireError):
            p.parse(m)


EVENTS = ["connected", "start", "media", "dtmf", "mark", "clear", "stop"]
KEYS = ["sequence_number", "stream_sid", "start", "media", "dtmf", "mark", "stop"]


@FUZZ
@given(st.lists(wire_messages(EVENTS, KEYS), max_size=8))
def test_fuzzed_messages_raise_only_wire_errors(messages: list[Message]) -> None:
    fuzz(ExotelStream, [start_event(), *messages])
    fuzz(ExotelStream, messages)


# --- a real service ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exotel_api() -> Iterator[FakeApi]:
    expected_auth = "Basic " + base64.b64encode(f"{API_KEY}:{API_TOKEN}".encode()).decode()

    def reply(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if headers.get("authorization") != expected_auth:
            return 401, {"RestException": {"Status": 401, "Message": "Authentication is required"}}
        if method == "POST" and path == f"/v1/accounts/{SID}/calls/connect":
            return 200, {"call": {"sid": CALL_SID, "status": "in-progress", "direction": "outbound-api"}}
        return 404, {}

    api = FakeApi(reply)
    yield api
    api.close()


@pytest.fixture(scope="module")
def service_env(exotel_api: FakeApi) -> dict[str, str]:
    """The settings of the module's `parley serve` (the shared ``service``, ``key`` and ``agent`` use them)."""
    return {"PARLEY_EXOTEL_ACCOUNT_SID": SID, "PARLEY_EXOTEL_API_KEY": API_KEY, "PARLEY_EXOTEL_API_TOKEN": API_TOKEN,
            "PARLEY_EXOTEL_API_BASE_URL": exotel_api.url}  # fmt: skip


def stream_url(service: Service, credentials: bool = True, **query: str) -> str:
    """The applet's URL, as Exotel's guide writes it: wss://KEY:TOKEN@host/path?params."""
    host = service.url.split("://", 1)[1]
    userinfo = f"{quote(API_KEY, safe='')}:{quote(API_TOKEN, safe='')}@" if credentials else ""
    return f"ws://{userinfo}{host}/telephony/exotel/stream?{urlencode(query)}"


def test_a_stream_without_the_account_credentials_is_refused(service: Service, agent: dict[str, Any]) -> None:
    async def connect() -> None:
        async with websockets.connect(stream_url(service, credentials=False, agent=agent["id"])):
            pass

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(connect())
    assert refused.value.response.status_code == 403


def test_outbound_call_and_its_status(service: Service, key: str, agent: dict[str, Any], exotel_api: FakeApi) -> None:
    with service.client(key) as c:
        r = c.post("/v1/calls", json={"agent_id": agent["id"], "to": "+919876543210", "from": "08047491899",
                                      "provider": "exotel"})  # fmt: skip
        assert r.status_code == 201, r.text
        call = r.json()
    assert call["status"] == "dialing" and call["provider_call_id"] == CALL_SID
    method, path, _, body = exotel_api.requests[-1]
    form = parse_qsl(body.decode())
    fields = dict(form)
    assert (method, path) == ("POST", f"/v1/accounts/{SID}/calls/connect")
    assert fields["from"] == "+919876543210" and fields["callerid"] == "08047491899"
    assert fields["streamtype"] == "bidirectional" and ("statuscallbackevents[]", "terminal") in form
    stream = urlsplit(fields["streamurl"])
    assert stream.username == quote(API_KEY, safe="") and f"call={call['id']}" in stream.query
    status = {"CallSid": CALL_SID, "Status": "no-answer", "EventType": "terminal"}
    assert httpx.post(fields["statuscallback"].split("?")[0], data=status).status_code == 403  # no token
    assert httpx.post(fields["statuscallback"], data=status).status_code == 204
    with service.client(key) as c:
        detail = c.get(f"/v1/calls/{call['id']}").json()
        assert detail["status"] == "failed" and detail["end_reason"] == "no-answer"
        c.delete(f"/v1/calls/{call['id']}")


def test_a_call_over_the_websocket(service: Service, key: str, agent: dict[str, Any]) -> None:
    media: list[Message] = [media_event(f, seq) for seq, f in enumerate(frames(speech(8000), 8000), start=2)]

    def exotel(message: Message) -> list[Message]:
        data = json.loads(message)
        if data["event"] == "mark":  # played at once: Exotel echoes the mark
            return [json.dumps({"event": "mark", "stream_sid": STREAM_SID, "mark": data["mark"]})]
        return []

    opening: list[Message] = [json.dumps({"event": "connected"}), start_event()]
    stop = json.dumps(
        {"event": "stop", "stream_sid": STREAM_SID, "stop": {"call_sid": CALL_SID, "reason": "callended"}}
    )
    got = asyncio.run(talk(stream_url(service, agent=agent["id"]), opening, media, exotel, closing=[stop]))
    sent = [json.loads(m) for m in got if json.loads(m)["event"] == "media"]
    assert len(sent) > 50 and {len(base64.b64decode(m["media"]["payload"])) for m in sent} == {320}
    assert {m["stream_sid"] for m in sent} == {STREAM_SID}
    call = finished_call(service, key, "exotel")
    assert (call["caller"], call["called"], call["provider_call_id"]) == ("09876543210", "08047491899", CALL_SID)
    assert call["end_reason"] == "caller-hangup"
    assert_conversation(call, "exotel")

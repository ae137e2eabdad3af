"""Twilio: signed webhooks (signatures computed by the twilio SDK), TwiML, Media Streams wire format, a whole
conversation with barge-in over the stream endpoint, status callbacks, and outbound calls.

Twilio's cloud cannot be reached here: the stream's far end is `tests/support/twilio_peer.py`, which plays Twilio's part
of the documented Media Streams protocol, and outbound calls go to a local server speaking Twilio's REST wire
format (`FakeTwilioRest`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
import websockets
import yaml
from hypothesis import given, settings
from websockets.exceptions import ConnectionClosed

from parley.audio import pcm16_to_ulaw
from parley.calls.synthetic_caller import speak
from parley.telephony.stream import Dtmf, MarkPlayed, Media, Stop, StreamStart, WireError
from parley.telephony.twilio import TwilioStream

from .support.service import ROOT, Service, running_service
from .support.twilio import PUBLIC, SID, TOKEN, signed_post, stream_of, stream_url, voice_form
from .support.twilio_peer import FakeTwilioRest, TwilioPeer

RECEPTIONIST = yaml.safe_load((ROOT / "examples/agents/receptionist.yaml").read_text())
RECEPTIONIST["llm"]["options"]["max_tokens"] = 40


# --- the wire format, message by message -------------------------------------------------

START: dict[str, Any] = {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
         "start": {"accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound"],
                   "customParameters": {"agent": "a", "caller": "+15550100"},
                   "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}  # fmt: skip


def test_parses_twilios_messages() -> None:
    proto = TwilioStream()
    assert proto.parse(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))[0]
    (start,) = proto.parse(json.dumps(START))
    assert isinstance(start, StreamStart)
    assert (start.stream_id, start.provider_call_id, start.params["agent"], start.caller) == (
        "MZ1", "CA1", "a", "+15550100")  # fmt: skip
    payload = base64.b64encode(pcm16_to_ulaw(np.full(160, 1000, np.int16).tobytes())).decode()
    media = {"event": "media", "sequenceNumber": "2", "streamSid": "MZ1",
             "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": payload}}  # fmt: skip
    (m,) = proto.parse(json.dumps(media))
    assert isinstance(m, Media) and len(m.pcm) == 320 and abs(np.frombuffer(m.pcm, np.int16).mean() - 1000) < 40
    dtmf = {
        "event": "dtmf",
        "streamSid": "MZ1",
        "sequenceNumber": "3",
        "dtmf": {"track": "inbound_track", "digit": "7"},
    }
    assert proto.parse(json.dumps(dtmf)) == [Dtmf("7")]
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": {"name": "p1:5"}}
    assert proto.parse(json.dumps(mark)) == [MarkPlayed("p1:5")]
    stop = {"event": "stop", "sequenceNumber": "5", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}}
    assert isinstance(proto.parse(json.dumps(stop))[0], Stop)


def test_writes_only_media_mark_and_clear() -> None:
    proto = TwilioStream()
    proto.parse(json.dumps(START))
    (media,) = proto.audio(bytes(320))
    out = [json.loads(str(m)) for m in (media, proto.mark("p1:5"), proto.clear())]
    assert [m["event"] for m in out] == ["media", "mark", "clear"]
    assert all(m["streamSid"] == "MZ1" for m in out)
    assert len(base64.b64decode(out[0]["media"]["payload"])) == 160  # 20 ms of µ-law
    assert set(out[0]["media"]) == {"payload"}


@pytest.mark.parametrize(
    "message",
    [
        "not json", "[]", '{"event": 5}', '{"event": "media"}',  # media before start
        json.dumps({**START, "event": "bogus", "sequenceNumber": "9"}),
        json.dumps({**START, "start": {**START["start"], "mediaFormat": {"encoding": "audio/x-l16"}}}),
    ],
)  # fmt: skip
def test_garbage_is_a_wire_error(message: str) -> None:
    with pytest.raises(WireError):
        TwilioStream().parse(message)


def test_out_of_order_and_foreign_messages_are_refused() -> None:
    proto = TwilioStream()
    proto.parse(json.dumps(START))
    media = {"event": "media", "sequenceNumber": "3", "streamSid": "MZ1", "media": {"payload": "/w=="}}
    proto.parse(json.dumps(media))
    with pytest.raises(WireError, match="out of order"):
        proto.parse(json.dumps({**media, "sequenceNumber": "2"}))
    with pytest.raises(WireError, match="another stream"):
        proto.parse(json.dumps({**media, "sequenceNumber": "4", "streamSid": "MZ2"}))
    with pytest.raises(WireError, match="base64"):
        proto.parse(json.dumps({**media, "sequenceNumber": "5", "media": {"payload": "***"}}))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(["event", "sequenceNumber", "streamSid", "media", "start", "mark",
                                                  "dtmf"]),
                                 st.one_of(st.text(max_size=20), st.integers(), st.none(),
                                           st.dictionaries(st.text(max_size=10), st.text(max_size=10))))
                 .map(json.dumps)))  # fmt: skip
def test_fuzzed_messages_raise_only_wire_errors(message: str | bytes) -> None:
    proto = TwilioStream()
    for m in (json.dumps(START), message):
        try:
            proto.parse(m)
        except WireError:
            pass


# --- the service ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rest() -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as server:
        yield server


@pytest.fixture(scope="module")
def service_env(rest: FakeTwilioRest) -> dict[str, str]:
    """The settings of the module's `parley serve` (the shared ``service``, ``key`` and ``agent`` use them)."""
    return {"PARLEY_TWILIO_ACCOUNT_SID": SID, "PARLEY_TWILIO_AUTH_TOKEN": TOKEN, "PARLEY_PUBLIC_URL": PUBLIC,
            "PARLEY_TWILIO_API_BASE_URL": rest.url}  # fmt: skip


@pytest.fixture(scope="module")
def tenant_name() -> str:
    return "phones"


@pytest.fixture(scope="module")
def agent_doc() -> dict[str, Any]:
    return {**RECEPTIONIST, "name": "phone-desk"}


@pytest.fixture(scope="module")
def agent(agent: dict[str, Any], service: Service, key: str) -> dict[str, Any]:
    """The shared fixture's agent, answering +1 (555) 010-0200 (assigned to the tenant, then mapped to it)."""
    service.assign_number("+1 (555) 010-0200", "phones")
    with service.client(key) as c:
        assert c.post("/v1/numbers", json={"number": "+1 (555) 010-0200", "agent_id": "phone-desk"}).status_code == 201
    return agent


def test_wrong_signature_is_403(service: Service, agent: dict[str, Any]) -> None:
    assert (
        signed_post(service, "/telephony/twilio/voice?agent=phone-desk", voice_form(), token="wrong").status_code == 403
    )
    with service.client() as c:
        assert c.post("/telephony/twilio/voice", data=voice_form()).status_code == 403  # no signature at all
    assert "twilio_bad_signature" in service.log.read_text()


def test_unknown_agent_is_404_with_twiml(service: Service, agent: dict[str, Any]) -> None:
    r = signed_post(service, "/telephony/twilio/voice?agent=nobody", voice_form())
    assert r.status_code == 404 and "<Hangup" in r.text
    r = signed_post(service, "/telephony/twilio/voice", voice_form(to="+15550000000"))
    assert r.status_code == 404


def test_twiml_connects_the_called_numbers_agent(service: Service, agent: dict[str, Any]) -> None:
    r = signed_post(service, "/telephony/twilio/voice", voice_form())  # no ?agent: the number's mapping
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    url, params = stream_of(r.text)
    assert url == "wss://parley.example.com/telephony/twilio/stream"
    assert params["agent"] == agent["id"] and params["caller"] == "+15550109999" and params["token"]


def test_forged_stream_parameters_are_refused(service: Service, agent: dict[str, Any]) -> None:
    _, params = stream_of(signed_post(service, "/telephony/twilio/voice?agent=phone-desk", voice_form()).text)
    url, headers = stream_url(service)
    peer = TwilioPeer(url, {**params, "agent": "someone-else"}, headers)

    async def script(p: TwilioPeer) -> None:
        await asyncio.sleep(1.0)

    with pytest.raises(ConnectionClosed):
        asyncio.run(peer.run(script))


def test_garbage_on_the_stream_does_not_crash_the_service(service: Service, agent: dict[str, Any]) -> None:
    url, headers = stream_url(service)

    async def garbage() -> None:
        async with websockets.connect(url, additional_headers=headers) as ws:
            messages: list[str | bytes] = ["nonsense", '{"event": "media", "media": {"payload": "AAAA"}}', b"\x00\x01"]
            for m in messages:
                await ws.send(m)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 15)

    asyncio.run(garbage())
    with service.client() as c:
        assert c.get("/health").status_code == 200


async def caller_speech(text: str) -> np.ndarray:
    return await speak(text, "joe-quick", rate=8000)


def test_conversation_with_barge_in(service: Service, key: str, agent: dict[str, Any]) -> None:
    """A whole call as Twilio carries it: greeting, a question, an answer the caller talks over (clear arrives,
    marks tell what was heard), another answer, DTMF, stop."""
    r = signed_post(service, "/telephony/twilio/voice?agent=phone-desk", voice_form(sid="CA" + "3" * 32))
    _, params = stream_of(r.text)
    url, headers = stream_url(service)
    peer = TwilioPeer(url, params, headers, call_sid="CA" + "3" * 32)
    question = asyncio.run(caller_speech("Hello. What are your opening hours on Saturday?"))
    interruption = asyncio.run(caller_speech("Sorry, wait. Do you have parking?"))

    async def script(p: TwilioPeer) -> None:
        await p.wait_for("media", within=60)  # the greeting
        await p.wait_quiet(1.0)
        greeting_frames = p.agent_frames
        p.say(question)
        await p.wait_played(greeting_frames + 25)  # half a second of the answer has played
        p.say(interruption)
        await p.wait_for("clear", within=20)
        await p.wait_quiet(1.5, within=90)
        p.press("42")
        await asyncio.sleep(1.0)

    asyncio.run(peer.run(script))
    assert peer.violations == []
    assert peer.kinds("mark_played"), "marks were sent and echoed"
    assert peer.underruns <= max(5, peer.agent_frames // 20), f"{peer.underruns} gaps in {peer.agent_frames} frames"

    with service.client(key) as c:
        for _ in range(100):
            calls = c.get("/v1/calls", params={"transport": "twilio"}).json()
            done = [x for x in calls if x["provider_call_id"] == "CA" + "3" * 32 and x["status"] != "active"]
            if done:
                break
            time.sleep(0.2)
        call = c.get(f"/v1/calls/{done[0]['id']}").json()
    assert call["caller"] == "+15550109999" and call["end_reason"] == "caller-hangup"
    kinds = [e["kind"] for e in call["events"]]
    assert "interruption" in kinds and kinds.count("dtmf") == 2
    turns = {t["turn"]: t for t in call["turns"]}
    assert turns[0]["agent_text"]  # the greeting
    talked_over = [t for t in turns.values() if t["interrupted"]]
    assert talked_over, call["turns"]
    cut = talked_over[0]
    # what the caller heard, by the marks, is a strict prefix of what was generated
    assert len(cut["agent_text"]) < len(cut["agent_text_generated"])
    assert cut["agent_text_generated"].startswith(cut["agent_text"].rstrip(".,!? "))
    callers = " ".join(t["caller_text"].lower() for t in turns.values())
    assert "saturday" in callers or "hours" in callers
    assert "parking" in callers


def test_status_callback_updates_a_dialled_call(service: Service, key: str, agent: dict[str, Any],
                                                rest: FakeTwilioRest) -> None:  # fmt: skip
    with service.client(key) as c:
        r = c.post("/v1/calls", json={"agent_id": agent["id"], "to": "+15550107777", "from": "+15550100200",
                                      "provider": "twilio"})  # fmt: skip
        assert r.status_code == 201, r.text
        call = r.json()
    assert call["status"] == "dialing" and call["direction"] == "outbound" and call["provider_call_id"]
    created = rest.requests[-1]
    assert created["path"].endswith(f"/Accounts/{SID}/Calls.json")
    assert created["form"]["To"] == "+15550107777" and created["form"]["From"] == "+15550100200"
    assert created["form"]["Url"].startswith(PUBLIC + "/telephony/twilio/voice?")
    assert created["auth"].startswith("Basic ")
    form = {"CallSid": call["provider_call_id"], "AccountSid": SID, "CallStatus": "no-answer"}
    assert signed_post(service, "/telephony/twilio/status", form).status_code == 204
    with service.client(key) as c:
        after = c.get(f"/v1/calls/{call['id']}").json()
    assert after["status"] == "failed" and after["end_reason"] == "no-answer"
    assert any(e["kind"] == "carrier_status" for e in after["events"])


def test_answered_outbound_call_reuses_its_record(service: Service, key: str, agent: dict[str, Any]) -> None:
    with service.client(key) as c:
        call = c.post("/v1/calls", json={"agent_id": "phone-desk", "to": "+15550108888", "from": "+15550100200"}).json()
    sid = call["provider_call_id"]
    # Twilio fetches the Url it was given when the callee answers: its query names the call record
    path = f"/telephony/twilio/voice?agent={agent['id']}&call={call['id']}"
    form = {**voice_form(to="+15550108888", sid=sid), "From": "+15550100200", "Direction": "outbound-api"}
    _, params = stream_of(signed_post(service, path, form).text)
    assert params["call"] == call["id"] and params["caller"] == "+15550108888"
    url, headers = stream_url(service)
    peer = TwilioPeer(url, params, headers, call_sid=sid)

    async def script(p: TwilioPeer) -> None:
        await p.wait_for("media", within=60)
        await p.wait_quiet(1.0)

    asyncio.run(peer.run(script))
    with service.client(key) as c:
        for _ in range(50):
            after = c.get(f"/v1/calls/{call['id']}").json()
            if after["status"] != "active":
                break
            time.sleep(0.2)
    assert after["status"] == "ended" and after["direction"] == "outbound" and after["turns"]


def test_dial_without_credentials_fails_cleanly(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        k = svc.create_key("nocreds")
        with svc.client(k) as c:
            c.post("/v1/agents", json={**RECEPTIONIST, "name": "x"})
            r = c.post("/v1/calls", json={"agent_id": "x", "to": "+15550101234", "from": "+15550100000"})
            assert r.status_code == 502 and "PARLEY_TWILIO_ACCOUNT_SID" in r.json()["detail"]
            calls = c.get("/v1/calls").json()
            assert calls[0]["status"] == "failed"

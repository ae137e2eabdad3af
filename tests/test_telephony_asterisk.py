"""Asterisk chan_websocket: control messages in both forms, media, Basic auth, and one call end to end.

Messages are written as Asterisk's WebSocket channel driver documentation shows them
(docs.asterisk.org/Configuration/Channel-Drivers/WebSocket: "Control Commands and
Events"; plain text ``MEDIA_START connection_id:… format:ulaw optimal_frame_size:160``
and the JSON form with ``f(json)``). The test client stands in for Asterisk dialling
``WebSocket/parley/c(ulaw)``: the ``media`` subprotocol and the Basic credentials of
its websocket_client.conf entry, µ-law frames of 160 bytes every 20 ms.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus

from parley.audio import alaw_to_pcm16, pcm16_to_ulaw, ulaw_to_pcm16
from parley.telephony.asterisk import AsteriskStream
from parley.telephony.stream import Dtmf, Info, Media, Pause, StreamStart, WireError

from .support.service import Service
from .support.telephony import (
    FUZZ,
    Message,
    assert_conversation,
    finished_call,
    frames,
    fuzz,
    speech,
    talk,
    wire_messages,
)

PLAIN_START = (
    "MEDIA_START connection_id:e226e283-c90a-4ea9-9e37-389000b9ef47 channel:WebSocket/connectionid "
    "channel_id:pbx1-123456789.999 format:ulaw optimal_frame_size:160 ptime:20"
)
JSON_START = json.dumps({
    "event": "MEDIA_START", "connection_id": "e226e283-c90a-4ea9-9e37-389000b9ef47",
    "channel": "WebSocket/connectionid", "channel_id": "pbx1-123456789.999", "format": "ulaw",
    "optimal_frame_size": 160, "ptime": 20,
    "channel_variables": {"PARLEY_CALLER": "+15550100", "PARLEY_CALLED": "6000", "SOME_CHANNEL_VARIABLE": "x"},
})  # fmt: skip


# --- wire format --------------------------------------------------------------------------------------


def test_plain_text_messages_map_to_events() -> None:
    p = AsteriskStream({"agent": "a", "caller": "+15550100"})
    (start,) = p.parse(PLAIN_START)
    assert isinstance(start, StreamStart) and start.provider_call_id == "pbx1-123456789.999"
    assert start.stream_id == "e226e283-c90a-4ea9-9e37-389000b9ef47" and start.caller == "+15550100"
    assert p.sample_rate == 8000 and start.params["agent"] == "a"
    ulaw = bytes(range(160))
    assert p.parse(ulaw) == [Media(ulaw_to_pcm16(ulaw))]
    assert p.parse("DTMF_END digit:5 channel_id:pbx1-123456789.999") == [Dtmf("5")]
    assert p.parse("MEDIA_XOFF") == [Pause(True)] and p.parse("MEDIA_XON") == [Pause(False)]
    assert p.parse("QUEUE_DRAINED") == [Info("QUEUE_DRAINED")]
    assert p.parse("MEDIA_BUFFERING_COMPLETED 61ea9311") == [Info("MEDIA_BUFFERING_COMPLETED 61ea9311")]
    error = "ERROR channel_id:pbx1-1.1 error_text:Unable to parse JSON command"
    assert p.parse(error) == [Info("ERROR Unable to parse JSON command")]
    status = "STATUS queue_length:43 xon_level:800 xoff_level:900 queue_full:false bulk_media:true media_paused:false"
    assert p.parse(status) == [Info("STATUS")]


def test_json_messages_map_to_events_and_commands_answer_in_json() -> None:
    p = AsteriskStream({"agent": "a"})
    (start,) = p.parse(JSON_START)
    assert isinstance(start, StreamStart) and (start.caller, start.called) == ("+15550100", "6000")
    dtmf = {"event": "DTMF_END", "channel_id": "pbx1-123456789.999", "digit": "#"}
    assert p.parse(json.dumps(dtmf)) == [Dtmf("#")]
    assert p.parse('{"event": "MEDIA_XOFF", "channel_id": "pbx1-123456789.999"}') == [Pause(True)]
    assert json.loads(str(p.clear())) == {"command": "FLUSH_MEDIA"}
    assert json.loads(str(p.hangup())) == {"command": "HANGUP"}


def test_plain_text_commands_and_codecs() -> None:
    p = AsteriskStream()
    p.parse(PLAIN_START)
    assert p.clear() == "FLUSH_MEDIA" and p.hangup() == "HANGUP" and p.mark("p1:5") is None
    pcm = bytes(320)
    assert p.audio(pcm) == [pcm16_to_ulaw(pcm)]  # 160 bytes: the optimal frame size for ulaw
    a = AsteriskStream()
    a.parse(PLAIN_START.replace("format:ulaw", "format:alaw"))
    assert a.parse(b"\xd5" * 160) == [Media(alaw_to_pcm16(b"\xd5" * 160))]
    s16 = AsteriskStream()
    s16.parse(PLAIN_START.replace("format:ulaw", "format:slin16").replace("160", "640"))
    assert s16.sample_rate == 16000 and s16.audio(bytes(640)) == [bytes(640)]


def test_out_of_order_and_garbage_is_a_wire_error() -> None:
    early: list[Message] = [bytes(160), "DTMF_END digit:1"]
    for before_start in early:
        with pytest.raises(WireError):
            AsteriskStream().parse(before_start)
    with pytest.raises(WireError):
        AsteriskStream().parse(PLAIN_START.replace("format:ulaw", "format:opus"))
    p = AsteriskStream()
    p.parse(PLAIN_START)
    for bad in ["hello world", "NOT_A_KNOWN_EVENT", "DTMF_END digit:55", "{", '{"command": "HANGUP"}']:
        with pytest.raises(WireError):
            p.parse(bad)


EVENTS = ["MEDIA_START", "DTMF_END", "MEDIA_XOFF", "MEDIA_XON", "QUEUE_DRAINED", "STATUS", "ERROR"]
KEYS = ["format", "digit", "channel_variables", "connection_id", "channel_id", "optimal_frame_size"]
plain = st.builds(
    lambda e, fields: " ".join([e, *(f"{k}:{v}" for k, v in fields.items())]),
    st.sampled_from(EVENTS),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), st.text(max_size=8), max_size=4),
)


@FUZZ
@given(st.lists(wire_messages(EVENTS, KEYS) | plain, max_size=8))
def test_fuzzed_messages_raise_only_wire_errors(messages: list[Message]) -> None:
    fuzz(AsteriskStream, [PLAIN_START, *messages])
    fuzz(AsteriskStream, [JSON_START, *messages])
    fuzz(AsteriskStream, messages)


# --- a real service ---------------------------------------------------------------------------------------

USER, PASSWORD = "asterisk", "websocket-client-password"


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    """The settings of the module's `parley serve` (the shared ``service``, ``key`` and ``agent`` use them)."""
    return {"PARLEY_ASTERISK_USERNAME": USER, "PARLEY_ASTERISK_PASSWORD": PASSWORD}


def media_url(service: Service, credentials: str = f"{USER}:{PASSWORD}@", **query: str) -> str:
    """websocket_client.conf ``uri`` (plus the Dial string's ``v(...)`` parameters), with its username/password."""
    return f"ws://{credentials}{service.url.split('://', 1)[1]}/telephony/asterisk/media?{urlencode(query)}"


def test_wrong_credentials_are_refused(service: Service, agent: dict[str, Any]) -> None:
    async def connect(url: str) -> None:
        async with websockets.connect(url, subprotocols=["media"]):  # type: ignore[list-item]
            pass

    for credentials in ["", f"{USER}:wrong@"]:
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(connect(media_url(service, credentials, agent=agent["id"])))
        assert refused.value.response.status_code == 403


def test_a_call_over_the_websocket(service: Service, key: str, agent: dict[str, Any]) -> None:
    media: list[Message] = [pcm16_to_ulaw(f) for f in frames(speech(8000), 8000)]
    url = media_url(service, agent=agent["name"], caller="+15550100", called="6000")
    got = asyncio.run(talk(url, [PLAIN_START], media, subprotocols=["media"]))
    audio = [m for m in got if isinstance(m, bytes)]
    assert len(audio) > 50 and {len(m) for m in audio} == {160}  # µ-law, one 20 ms frame per message
    assert all(m in ("FLUSH_MEDIA", "HANGUP") for m in got if isinstance(m, str))
    call_record = finished_call(service, key, "asterisk")
    assert (call_record["caller"], call_record["called"]) == ("+15550100", "6000")
    assert call_record["provider_call_id"] == "pbx1-123456789.999"
    assert_conversation(call_record, "asterisk")


def test_the_media_subprotocol_is_accepted(service: Service, agent: dict[str, Any]) -> None:
    async def connect() -> str | None:
        url = media_url(service, agent=agent["id"])
        async with websockets.connect(url, subprotocols=["media"]) as ws:  # type: ignore[list-item]
            return ws.subprotocol

    assert asyncio.run(connect()) == "media"

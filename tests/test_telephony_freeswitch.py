"""FreeSWITCH mod_audio_stream: metadata, L16 frames, streamAudio playback, the token, one call end to end.

Messages are written as mod_audio_stream's README shows them
(github.com/amigniter/mod_audio_stream: ``uuid_audio_stream <uuid> start <url> mono 16k
<metadata>`` sends the metadata text first, then binary L16 frames; the server plays
audio back with ``{"type": "streamAudio", "data": {"audioDataType": "raw",
"sampleRate": …, "audioData": <base64>}}``). The test client stands in for the module.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus

from parley.telephony.freeswitch import FreeSwitchStream
from parley.telephony.stream import Info, Media, StreamStart, WireError

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

UUID = "0c3c4b1e-5c3a-4d1e-9d0e-1c2b3a4d5e6f"
METADATA = json.dumps({"uuid": UUID, "caller": "1000", "called": "5000", "anything": {"else": 1}})


# --- wire format --------------------------------------------------------------------------------------


def test_metadata_then_frames() -> None:
    p = FreeSwitchStream({"agent": "a"})
    (start,) = p.parse(METADATA)
    assert isinstance(start, StreamStart) and start.provider_call_id == UUID
    assert (start.caller, start.called, start.params["agent"]) == ("1000", "5000", "a")
    frame = bytes(range(256)) * 2 + bytes(128)  # 20 ms of 16 kHz L16 mono
    assert p.parse(frame) == [Media(frame)]
    assert p.parse("more text") == [Info("text from FreeSWITCH: more text")]


def test_without_metadata_the_first_frame_starts_the_call() -> None:
    p = FreeSwitchStream({"agent": "a", "caller": "1000"}, sample_rate=8000)
    frame = bytes(320)
    start, media = p.parse(frame)
    assert isinstance(start, StreamStart) and start.caller == "1000" and media == Media(frame)
    assert p.sample_rate == 8000
    assert isinstance(FreeSwitchStream().parse("plain words, not JSON")[0], StreamStart)


def test_outgoing_messages() -> None:
    p = FreeSwitchStream()
    pcm = bytes(640)
    (message,) = p.audio(pcm)
    assert json.loads(message) == {
        "type": "streamAudio",
        "data": {"audioDataType": "raw", "sampleRate": 16000, "audioData": base64.b64encode(pcm).decode()},
    }
    assert p.mark("p1:5") is None and p.clear() is None and p.hangup() is None  # the socket closing hangs up


def test_odd_frames_are_wire_errors() -> None:
    with pytest.raises(WireError):
        FreeSwitchStream().parse(b"\x00\x01\x02")


@FUZZ
@given(st.lists(wire_messages(["streamAudio"], ["uuid", "caller", "called", "agent"], event_key="type"), max_size=8))
def test_fuzzed_messages_raise_only_wire_errors(messages: list[Message]) -> None:
    fuzz(FreeSwitchStream, messages)
    fuzz(FreeSwitchStream, [METADATA, *messages])


# --- a real service ---------------------------------------------------------------------------------------

TOKEN = "freeswitch-shared-token"


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    """The settings of the module's `parley serve` (the shared ``service``, ``key`` and ``agent`` use them)."""
    return {"PARLEY_FREESWITCH_TOKEN": TOKEN}


def stream_url(service: Service, **query: str) -> str:
    return service.url.replace("http", "ws") + f"/telephony/freeswitch/stream?{urlencode(query)}"


def test_a_wrong_token_is_refused(service: Service, agent: dict[str, Any]) -> None:
    async def connect(url: str) -> None:
        async with websockets.connect(url):
            pass

    for query in [{"agent": agent["id"]}, {"agent": agent["id"], "token": "wrong"}]:
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(connect(stream_url(service, **query)))
        assert refused.value.response.status_code == 403


def test_a_call_over_the_websocket(service: Service, key: str, agent: dict[str, Any]) -> None:
    media: list[Message] = list(frames(speech(16000), 16000))
    got = asyncio.run(talk(stream_url(service, agent=agent["id"], token=TOKEN), [METADATA], media))
    plays = [json.loads(m) for m in got]
    assert len(plays) > 50 and {p["type"] for p in plays} == {"streamAudio"}
    assert {(p["data"]["audioDataType"], p["data"]["sampleRate"]) for p in plays} == {("raw", 16000)}
    assert {len(base64.b64decode(p["data"]["audioData"])) for p in plays} == {640}
    call = finished_call(service, key, "freeswitch")
    assert (call["caller"], call["called"], call["provider_call_id"]) == ("1000", "5000", UUID)
    assert_conversation(call, "freeswitch")

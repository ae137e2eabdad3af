"""SDP parsing and the offer/answer rules (RFC 4566, RFC 3264) Parley answers PBXs and trunks with."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.protocol.sdp import (
    NoCommonCodec,
    SdpError,
    SessionDescription,
    accept_answer,
    answer_offer,
    make_offer,
)


def offer(media: str, connection: str = "c=IN IP4 203.0.113.7\r\n", extra: str = "") -> SessionDescription:
    text = f"v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\n{connection}t=0 0\r\n{extra}{media}"
    return SessionDescription.parse(text.encode())


ASTERISK = (
    "m=audio 17000 RTP/AVP 8 0 3 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:3 GSM/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
    "a=maxptime:150\r\na=sendrecv\r\n"
)


def test_the_offerers_first_choice_wins() -> None:
    answer, params = answer_offer(offer(ASTERISK), "192.0.2.10", 20000, 42, 1)
    assert (params.encoding, params.payload_type, params.dtmf_payload_type) == ("PCMA", 8, 101)
    assert params.remote == ("203.0.113.7", 17000) and params.direction == "sendrecv" and not params.on_hold
    text = answer.encode().decode()
    assert "m=audio 20000 RTP/AVP 8 101\r\n" in text and "c=IN IP4 192.0.2.10\r\n" in text
    assert "a=rtpmap:8 PCMA/8000" in text and "a=fmtp:101 0-16" in text and "o=parley 42 1 IN IP4" in text
    again = SessionDescription.parse(answer.encode())
    assert again.media[0].formats == ["8", "101"]


def test_static_payload_types_need_no_rtpmap() -> None:
    _, params = answer_offer(offer("m=audio 4000 RTP/AVP 18 0\r\n"), "h", 1, 1, 1)
    assert params.encoding == "PCMU" and params.dtmf_payload_type is None


def test_telephone_event_at_8000_hz_is_picked_among_several_rates() -> None:
    media = (
        "m=audio 5004 RTP/AVP 111 0 110 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:110 telephone-event/48000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    answer, params = answer_offer(offer(media), "h", 1, 1, 1)
    assert params.encoding == "PCMU" and params.dtmf_payload_type == 101
    assert "110" not in answer.media[0].formats


def test_a_dynamic_payload_type_for_g711_is_honoured() -> None:
    _, params = answer_offer(offer("m=audio 5004 RTP/AVP 96\r\na=rtpmap:96 pcmu/8000\r\n"), "h", 1, 1, 1)
    assert (params.encoding, params.payload_type) == ("PCMU", 96)


@pytest.mark.parametrize(
    "media",
    [
        "m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n",
        "m=audio 4000 RTP/AVP 9 111\r\na=rtpmap:111 opus/48000/2\r\n",
        "m=audio 4000 RTP/SAVP 0\r\n",  # SRTP: Parley has no keys to offer
        "m=audio 0 RTP/AVP 0\r\n",  # the audio stream is disabled
        "m=video 4000 RTP/AVP 96\r\n",
        "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/16000\r\n",
    ],
)
def test_no_common_codec(media: str) -> None:
    with pytest.raises(NoCommonCodec):
        answer_offer(offer(media), "h", 1, 1, 1)


@pytest.mark.parametrize(
    "attr,connection,ours,on_hold",
    [
        ("a=sendonly\r\n", "203.0.113.7", "recvonly", True),
        ("a=inactive\r\n", "203.0.113.7", "inactive", True),
        ("a=recvonly\r\n", "203.0.113.7", "sendonly", False),
        ("", "0.0.0.0", "recvonly", True),  # RFC 2543 hold
        ("a=sendrecv\r\n", "203.0.113.7", "sendrecv", False),
    ],
)
def test_hold_forms(attr: str, connection: str, ours: str, on_hold: bool) -> None:
    sdp = offer(f"m=audio 4000 RTP/AVP 0\r\n{attr}", f"c=IN IP4 {connection}\r\n")
    answer, params = answer_offer(sdp, "h", 1, 1, 2)
    assert params.direction == ours and params.on_hold is on_hold
    assert f"a={ours}" in answer.encode().decode()


def test_session_level_direction_applies_to_the_stream() -> None:
    _, params = answer_offer(offer("m=audio 4000 RTP/AVP 0\r\n", extra="a=sendonly\r\n"), "h", 1, 1, 1)
    assert params.on_hold


def test_every_offered_stream_gets_a_line_in_the_answer() -> None:
    media = "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.1\r\n"
    answer, params = answer_offer(offer(media), "h", 9, 1, 1)
    assert [(m.kind, m.port) for m in answer.media] == [("video", 0), ("audio", 9)]
    assert params.remote == ("198.51.100.1", 4000)  # the stream's c= line wins over the session's


def test_offer_and_answer_for_outbound_calls_and_late_offers() -> None:
    ours = make_offer("192.0.2.10", 20002, 7, 1)
    assert SessionDescription.parse(ours.encode()).media[0].formats == ["0", "8", "101"]
    their_answer, _ = answer_offer(ours, "198.51.100.9", 30000, 1, 1)  # the far end answers as Parley would
    params = accept_answer(their_answer)
    assert params.remote == ("198.51.100.9", 30000) and params.encoding == "PCMU" and params.dtmf_payload_type == 101
    with pytest.raises(NoCommonCodec):
        accept_answer(offer("m=audio 0 RTP/AVP 0\r\n"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "o=- 1 1 IN IP4 h\r\nv=0\r\n",
        "v=1\r\n",
        "v=0\r\nm=audio x RTP/AVP 0\r\n",
        "v=0\r\nm=audio 4000\r\n",
        "v=0\r\nc=IN IP4\r\n",
        "v=0\r\nthis is not sdp\r\n",
    ],
)
def test_unreadable_sdp(text: str) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(text)


def test_an_audio_stream_without_an_address_is_refused() -> None:
    with pytest.raises(SdpError):
        answer_offer(offer("m=audio 4000 RTP/AVP 0\r\n", connection=""), "h", 1, 1, 1)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([
    "v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0", "c=IN IP6 ::1", "t=0 0",
    "m=audio 4000 RTP/AVP 0 8 101", "m=audio 0 RTP/AVP 0", "m=video 5000 RTP/AVP 96", "m=audio 1 RTP/SAVP 0",
    "a=rtpmap:101 telephone-event/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8", "a=rtpmap:x y/z", "a=sendonly",
    "a=fmtp:101 0-16", "a=inactive", "m=audio 99999 RTP/AVP 0", "c=IN", "b=AS:64", "a=", "m=", "x",
]), max_size=14), st.text(max_size=30))  # fmt: skip
def test_fuzz_sdp(lines: list[str], noise: str) -> None:
    for text in ("\r\n".join(lines), "\r\n".join([*lines, noise]), noise):
        try:
            sdp = SessionDescription.parse(text.encode())
            answer, _ = answer_offer(sdp, "192.0.2.1", 2000, 1, 1)
            SessionDescription.parse(answer.encode())
            accept_answer(sdp)
        except SdpError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_sdp_bytes(data: bytes) -> None:
    try:
        answer_offer(SessionDescription.parse(data), "h", 1, 1, 1)
    except SdpError:
        pass

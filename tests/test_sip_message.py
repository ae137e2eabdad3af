"""SIP message parsing and printing (RFC 3261) as real peers send them; the parser never raises anything else."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.sip.protocol.message import (
    Address,
    Headers,
    Request,
    Response,
    SipParseError,
    SipUri,
    Via,
    new_branch,
    parse_message,
    response_to,
)

from .support.sip_fuzz import mutate

INVITE = (
    b"INVITE sip:Receptionist@10.0.0.5:5060;transport=udp SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bK776asdhds;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKdef;received=10.0.0.3\r\n"
    b"Max-Forwards: 70\r\n"
    b't: "Front desk" <sip:Receptionist@10.0.0.5>\r\n'
    b'f: "Doe, \\"Jane\\" <x>" <sip:+15551234567@pbx.example.com;user=phone>;tag=1928301774\r\n'
    b"i: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"m: <sip:jane@10.0.0.9:5062>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n"
    b"Subject: a folded\r\n\tsubject line\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\nextra bytes beyond Content-Length"
)


def test_a_real_world_invite() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE" and msg.body == b"v=0\r"
    uri = SipUri.parse(msg.uri)
    assert (uri.user, uri.host, uri.port, uri.params) == ("Receptionist", "10.0.0.5", 5060, {"transport": "udp"})
    vias = msg.vias
    assert [v.host for v in vias] == ["10.0.0.9", "10.0.0.1", "10.0.0.2"]  # one line or several: one list
    assert vias[0].branch == "z9hG4bK776asdhds" and vias[0].params["rport"] is None and vias[0].port == 5062
    assert vias[1].sent_by == "10.0.0.1:5060" and vias[2].params["received"] == "10.0.0.3"
    assert msg.call_id == "a84b4c76e66710@pc33.example.com" and msg.cseq == (314159, "INVITE")
    sender = msg.from_
    assert sender.display == 'Doe, "Jane" <x>' and sender.tag == "1928301774"
    assert sender.uri.user == "+15551234567" and sender.uri.params == {"user": "phone"}
    assert msg.to.tag is None and msg.to.display == "Front desk"
    assert msg.headers.get_all("Record-Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert msg.headers.get("subject") == "a folded subject line"
    assert msg.content_type == "application/sdp"


def test_printing_and_parsing_again_keeps_the_message() -> None:
    msg = parse_message(INVITE)
    again = parse_message(msg.encode())
    assert list(again.headers) == list(msg.headers) and again.body == msg.body
    text = msg.encode().decode()
    assert "Call-ID: a84b4c76e66710@pc33.example.com\r\n" in text and "Content-Length: 4\r\n" in text
    assert text.count("Via: ") == 3  # Via entries one a line, as stacks expect


def test_bare_lf_missing_content_length_and_leading_crlf() -> None:
    raw = b"\r\nOPTIONS sip:x@h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@h>;tag=1\n"
    raw += b"To: sip:x@h\nCall-ID: 1\nCSeq: 1 OPTIONS\n\nbody"
    msg = parse_message(raw)
    assert msg.body == b"body" and msg.to.uri.user == "x"


def test_responses_and_reason_phrases() -> None:
    raw = b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
    raw += b"To: <sip:b@h>;tag=2\r\nCall-ID: 1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
    msg = parse_message(raw)
    assert isinstance(msg, Response) and msg.status == 180 and msg.reason == "Ringing"
    assert msg.to.tag == "2" and msg.cseq == (7, "INVITE")
    assert Response(487).reason == "Request Terminated"


@pytest.mark.parametrize(
    "text,user,host,port,params",
    [
        ("sip:alice:secret@example.com:5070;transport=udp;lr?subject=hi", "alice", "example.com", 5070,
         {"transport": "udp", "lr": None}),
        ("sips:[2001:db8::1]:5061", None, "[2001:db8::1]", 5061, {}),
        ("SIP:Bob@EXAMPLE.com", "Bob", "example.com", None, {}),
        ("sip:+1%20555@10.0.0.1;user=phone", "+1%20555", "10.0.0.1", None, {"user": "phone"}),
    ],
)  # fmt: skip
def test_uris(text: str, user: str | None, host: str, port: int | None, params: dict) -> None:
    uri = SipUri.parse(text)
    assert (uri.user, uri.host, uri.port, uri.params) == (user, host, port, params)
    assert SipUri.parse(str(uri)) == uri


def test_uri_user_is_unescaped_for_routing() -> None:
    assert SipUri.parse("sip:Front%20desk@h").user_text == "Front desk"


@pytest.mark.parametrize(
    "bad", ["tel:+15551234", "sip:", "sip:@host", "sip:host:99999", "sip:host:", "sip:ho st", "sip:[::1", "mailto:x@y"]
)
def test_bad_uris(bad: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(bad)


def test_addresses_name_addr_and_addr_spec() -> None:
    a = Address.parse('"A; B, C" <sip:a@h;transport=udp>;tag=xyz;expires=60')
    assert a.display == "A; B, C" and a.uri.params == {"transport": "udp"}
    assert a.params == {"tag": "xyz", "expires": "60"}
    # an addr-spec's parameters belong to the header (RFC 3261 section 20.10): the tag is not the URI's
    b = Address.parse("sip:b@h;tag=1")
    assert b.tag == "1" and b.uri.params == {}
    assert str(b.with_tag("2")) == "<sip:b@h>;tag=2"
    assert Address.parse(str(a)) == a


def test_headers_are_case_insensitive_and_compact_forms_expand() -> None:
    h = Headers([("call-id", "x"), ("k", "timer, 100rel"), ("ALLOW", "INVITE,ACK")])
    assert h.get("Call-ID") == "x" and h.get_all("Supported") == ["timer", "100rel"]
    assert "allow" in h and h.get_all("Allow") == ["INVITE", "ACK"]
    h.set("Allow", "BYE")
    assert h.get_all("Allow") == ["BYE"]


def test_response_to_copies_what_rfc3261_says() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    trying = response_to(req, 100)
    assert trying.to.tag is None  # 100 Trying is the one response without a To tag
    ok = response_to(req, 200, to_tag="abc", record_route=True, body=b"v=0\r\n")
    assert ok.to.tag == "abc" and ok.headers.get_all("Via") == req.headers.get_all("Via")
    assert ok.headers.get_all("Record-Route") == req.headers.get_all("Record-Route")
    assert ok.cseq == (314159, "INVITE") and ok.call_id == req.call_id
    assert parse_message(ok.encode()).body == b"v=0\r\n"
    assert response_to(req, 404).to.tag  # tagged even when the TU gave none
    assert not response_to(req, 486).headers.get_all("Record-Route")


def test_new_branches_carry_the_magic_cookie() -> None:
    a, b = new_branch(), new_branch()
    assert a.startswith("z9hG4bK") and a != b
    assert Via.parse(f"SIP/2.0/UDP 1.2.3.4:5060;branch={a}").branch == a


@pytest.mark.parametrize(
    "raw,answerable",
    [
        (b"", False),
        (b"garbage\r\n\r\n", False),
        (b"INVITE sip:x@h SIP/3.0\r\n\r\n", False),
        (b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
         b"To: <sip:b@h>\r\nCall-ID: 1\r\nCSeq: x OPTIONS\r\n\r\n", True),
        (b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
         b"To: <sip:b@h>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 10\r\n\r\nshort", True),
        (b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
         b"To: <sip:b@h\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n", True),
        (b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
         b"Call-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n", False),  # no To: a response cannot be built
        (b"OPTIONS sip:x@h SIP/2.0\r\nVia: nonsense\r\nFrom: <sip:a@h>;tag=1\r\n"
         b"To: <sip:b@h>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n", False),
        (b"INVITE sip:x@h SIP/2.0\r\n\xff\xfe: \xff\r\n\r\n", False),
    ],
)  # fmt: skip
def test_malformed_messages(raw: bytes, answerable: bool) -> None:
    with pytest.raises(SipParseError) as err:
        parse_message(raw)
    assert (err.value.partial is not None) == answerable
    if err.value.partial is not None:
        assert response_to(err.value.partial, 400).encode().startswith(b"SIP/2.0 400 Bad Request\r\n")


def _use(msg: Request | Response) -> None:
    """Everything the endpoint reads from a parsed message must be readable without surprises."""
    _ = (msg.call_id, msg.cseq, msg.from_.tag, msg.to.tag, [v.branch for v in msg.vias], msg.content_type)
    for name in ("Contact", "Record-Route", "Route"):
        for value in msg.headers.get_all(name):
            if value != "*":
                Address.parse(value)
    parse_message(msg.encode())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    try:
        _use(parse_message(data))
    except SipParseError:
        pass


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_fuzz_mutated_invites(data: st.DataObject) -> None:
    raw = bytearray(INVITE)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[at] = data.draw(st.sampled_from(b' \t\r\n:;,<>"@=\\\x00\xffaZ9'))
        elif op == "delete":
            del raw[at : at + data.draw(st.integers(1, 20))]
        else:
            raw[at:at] = data.draw(st.sampled_from([b"\r\n", b";", b"<", b'"', b",", b"SIP/2.0", b"\r\n\r\n"]))
        if not raw:
            break
    try:
        _use(parse_message(bytes(raw)))
    except SipParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_uri_address_and_via_parsers(text: str) -> None:
    for parse in (SipUri.parse, Address.parse, Via.parse):
        try:
            parse(text)
        except SipParseError:
            pass


OPTIONS = (
    b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport=5060\r\nFrom: <sip:a@h>;tag=1\r\n"
    b"To: <sip:b@h>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    "old,new",
    [
        (b"Content-Length: 0", "Content-Length: \u00b2".encode()),  # '²'.isdigit() but int('²') raises
        (b"Content-Length: 0", b"Content-Length: " + b"9" * 5000),  # int() refuses 4,300+ digits
        (b"CSeq: 1 OPTIONS", "CSeq: \u00b2 OPTIONS".encode()),
        (b"CSeq: 1 OPTIONS", "CSeq: \u0661 OPTIONS".encode()),  # an Arabic-Indic 1 is not a CSeq
        (b"CSeq: 1 OPTIONS", b"CSeq: " + b"1" * 5000 + b" OPTIONS"),
        (b"h:5060;", "h:\u00b2;".encode()),
        (b"<sip:a@h>", "<sip:a@h:\u00b2>".encode()),
    ],
)
def test_unicode_digits_and_huge_numbers_are_parse_errors(old: bytes, new: bytes) -> None:
    """Found by the timed fuzzing of issue 8: these raised ValueError out of the parser."""
    with pytest.raises(SipParseError):
        _use(parse_message(OPTIONS.replace(old, new)))


def test_a_unicode_rport_falls_back_to_the_source_port() -> None:
    from parley.sip.protocol.transactions import response_address

    request = parse_message(OPTIONS.replace(b"rport=5060", "rport=\u00b2".encode()))
    assert isinstance(request, Request)
    assert response_address(request, ("10.0.0.9", 5999)) == ("10.0.0.9", 5999)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=50)
@given(st.randoms(use_true_random=False))
def test_fuzz_mutated_real_messages_within_50_ms(rng: random.Random) -> None:
    """The mutations the endpoint test sends (tests/support/sip_fuzz.py): a SipParseError or a usable message, fast."""
    from parley.sip.protocol.sdp import SdpError, SessionDescription

    raw = mutate(rng, "agent", 5060, "10.0.0.9", 5062, 1)
    try:
        msg = parse_message(raw)
        _use(msg)
        if msg.body:
            SessionDescription.parse(msg.body)
    except (SipParseError, SdpError):
        pass


@pytest.mark.parametrize(
    "extra",
    [
        b"X-Filler: y\r\n" * 4500,  # many short header lines
        b"Supported: " + b"a," * 30000 + b"\r\n",  # one list header with 30,000 values
        b"Via: " + b"SIP/2.0/UDP h;branch=z9hG4bK1," * 2000 + b"\r\n",  # 2,000 Vias on one line
        b"Subject: x\r\n" + b" folded\r\n" * 7000,  # a header folded 7,000 times
    ],
    ids=["lines", "values", "vias", "folds"],
)
def test_a_datagram_full_of_headers_is_a_quick_400(extra: bytes) -> None:
    """Timed fuzzing found 85 ms for one datagram of 4,500 header lines (every lookup walked them all)."""
    raw = OPTIONS.replace(b"Content-Length: 0\r\n", extra + b"Content-Length: 0\r\n")
    took = []
    for _ in range(3):
        start = time.perf_counter()
        try:
            _use(parse_message(raw))
        except SipParseError as exc:
            assert exc.partial is not None  # still answered 400, with what was kept
            response_to(exc.partial, 400).encode()
        took.append(time.perf_counter() - start)
    assert min(took) < 0.050, took

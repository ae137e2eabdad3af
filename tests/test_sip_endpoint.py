"""The SIP endpoint of a real `parley serve` against SIPp: what a PBX sees besides a normal call.

OPTIONS, an unknown user (404), an offer with no common codec (488), a caller who gives up before the
answer (CANCEL: 487), hold and unhold by re-INVITE, the agent transferring (REFER) and hanging up (BYE),
malformed datagrams (400, and the endpoint goes on), a late offer, lost ACKs and SIP INFO key presses.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.sip import RECEPTIONIST, SIPP_PCAPS, SipService, run_sipp, sip_service


@pytest.fixture(scope="module")
def sip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipService]:
    with sip_service(tmp_path_factory.mktemp("sip-endpoint")) as svc:
        yield svc


def test_options_answers_200_with_allow(sip: SipService, tmp_path: Path) -> None:
    run_sipp("options", sip.sip_port, tmp_path)


def test_unknown_user_gets_404(sip: SipService, tmp_path: Path) -> None:
    run_sipp("not_found", sip.sip_port, tmp_path, user="nobody-here")


def test_no_common_codec_gets_488(sip: SipService, tmp_path: Path) -> None:
    run_sipp("no_common_codec", sip.sip_port, tmp_path, user=sip.agent["name"])


def test_cancel_before_answer_gets_487(sip: SipService, tmp_path: Path) -> None:
    run_sipp("cancel", sip.sip_port, tmp_path, user=sip.agent["name"])


def test_hold_and_unhold_by_reinvite(sip: SipService, tmp_path: Path) -> None:
    run_sipp("hold", sip.sip_port, tmp_path, user=sip.agent["id"])  # by agent id this time
    with sip.service.client(sip.key) as c:
        for _ in range(50):
            calls = c.get("/v1/calls", params={"transport": "sip"}).json()
            if calls and calls[0]["status"] != "active":
                break
            time.sleep(0.2)
        call = c.get(f"/v1/calls/{calls[0]['id']}").json()
    assert call["end_reason"] == "caller-hangup" and call["direction"] == "inbound"
    holds = [e["data"]["on"] for e in call["events"] if e["kind"] == "hold"]
    assert holds == [True, False]


def _request(method: str, port: int, local: int, extra: str = "", cseq: str | None = None) -> bytes:
    return (
        f"{method} sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
        f"From: <sip:fuzz@127.0.0.1>;tag=f1\r\nTo: <sip:probe@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4()}@fuzz\r\nCSeq: {cseq or f'1 {method}'}\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def test_malformed_requests_get_400_and_the_endpoint_goes_on(sip: SipService) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        local = s.getsockname()[1]
        target = ("127.0.0.1", sip.sip_port)
        bad = [
            _request("OPTIONS", sip.sip_port, local, cseq="one OPTIONS"),  # CSeq not a number
            _request("OPTIONS", sip.sip_port, local, cseq="1 INVITE"),  # CSeq method differs
            _request("OPTIONS", sip.sip_port, local, extra="Contact: <sip:unterminated\r\n"),
            _request("OPTIONS", sip.sip_port, local).replace(b"Content-Length: 0", b"Content-Length: 900"),
        ]
        for packet in bad:
            s.sendto(packet, target)
            reply = s.recv(65535)
            assert reply.startswith(b"SIP/2.0 400 "), reply[:200]
        # what cannot be answered (no Via, no To: a response could not be built) is dropped, and nothing breaks
        no_to = _request("OPTIONS", sip.sip_port, local).replace(b"To: <sip:probe@127.0.0.1>\r\n", b"")
        junk = [
            b"\x00\xff" * 40,
            b"HELLO",
            b"INVITE sip:x SIP/2.0\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            b"\r\n\r\n",
            no_to,
        ]
        for packet in junk:
            s.sendto(packet, target)
        s.sendto(_request("OPTIONS", sip.sip_port, local), target)
        reply = s.recv(65535)
        assert reply.startswith(b"SIP/2.0 200 OK"), reply[:200]
        # an unknown method is 501, a known one Parley does not take is 405, a BYE for no call is 481
        for method, status in (("FOO", b"501"), ("REGISTER", b"405"), ("BYE", b"481")):
            s.sendto(_request(method, sip.sip_port, local), target)
            assert s.recv(65535).startswith(b"SIP/2.0 " + status)
    assert "Traceback" not in Path(sip.service.log).read_text()


class RawPeer:
    """A bare UDP SIP peer: what the tests above cannot make SIPp do (stay silent on purpose, retransmit)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", port)
        self.call_id = f"{uuid.uuid4()}@raw"

    def send(self, method: str, uri: str, cseq: int, branch: str, to_tag: str = "", body: str = "",
             content_type: str = "application/sdp") -> None:  # fmt: skip
        to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
        head = (
            f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.local};branch={branch};rport\r\n"
            f"From: <sip:raw@127.0.0.1:{self.local}>;tag=rawtag\r\nTo: {to}\r\nCall-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:raw@127.0.0.1:{self.local}>\r\nMax-Forwards: 70\r\n"
        )
        if body:
            head += f"Content-Type: {content_type}\r\n"
        self.sock.sendto(f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode(), self.target)

    def recv(self, timeout: float = 5.0) -> tuple[float, str]:
        self.sock.settimeout(timeout)
        return time.monotonic(), self.sock.recv(65535).decode()

    def until(self, status: str, timeout: float = 10.0) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while True:
            at, text = self.recv(max(0.1, deadline - time.monotonic()))
            if text.startswith(f"SIP/2.0 {status}"):
                return at, text


def test_late_offer_lost_acks_retransmissions_and_info_dtmf(sip: SipService) -> None:
    peer = RawPeer(sip.sip_port)
    uri = f"sip:{sip.agent['name']}@127.0.0.1:{sip.sip_port}"
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    try:
        peer.send("INVITE", uri, 1, "z9hG4bKraw1")  # no SDP: Parley offers in the 200, the ACK answers
        _, ok = peer.until("200", timeout=60)  # the agent's models load first (180 Ringing meanwhile)
        assert "m=audio" in ok and "RTP/AVP 0 8 101" in ok
        to_tag = next(line for line in ok.split("\r\n") if line.startswith("To:")).split("tag=")[1]
        assert peer.until("200")[1] == ok  # no ACK yet: the 200 comes again (T1, 2*T1, ...)
        peer.send("INVITE", uri, 1, "z9hG4bKraw1")  # the INVITE retransmitted: the last response again
        assert peer.until("200")[1] == ok
        answer = (
            f"v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {media.getsockname()[1]} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        )
        peer.send("ACK", uri, 1, "z9hG4bKraw2", to_tag, answer)
        peer.sock.settimeout(0.2)
        try:
            while True:  # drain what was in flight; then nothing more may come
                peer.sock.recv(65535)
        except TimeoutError:
            pass
        with pytest.raises(TimeoutError):
            peer.recv(1.5)
        media.settimeout(5)
        assert len(media.recv(2048)) == 12 + 160  # PCMU, 20 ms a packet, to the address in the ACK
        peer.send("INFO", uri, 2, "z9hG4bKraw3", to_tag)  # an empty INFO (a keep-alive some PBXs send)
        peer.until("200")
        peer.send("INFO", uri, 3, "z9hG4bKraw4", to_tag, "Signal=5\r\nDuration=160\r\n", "application/dtmf-relay")
        peer.until("200")
        peer.send("BYE", uri, 4, "z9hG4bKraw5", to_tag)
        peer.until("200")
    finally:
        media.close()
        peer.sock.close()
    with sip.service.client(sip.key) as c:
        for _ in range(50):
            call = c.get("/v1/calls", params={"transport": "sip"}).json()[0]
            if call["status"] != "active":
                break
            time.sleep(0.2)
        detail = c.get(f"/v1/calls/{call['id']}").json()
    assert detail["provider_call_id"] == peer.call_id and detail["end_reason"] == "caller-hangup"
    assert [e["data"]["digit"] for e in detail["events"] if e["kind"] == "dtmf"] == ["5"]


@pytest.mark.parametrize("digit,ending", [("1", "transferred"), ("2", "agent-hangup")])
def test_keypad_transfer_by_refer_and_hang_up_by_bye(sip: SipService, tmp_path: Path, digit: str, ending: str) -> None:
    keypad = {"1": {"action": "transfer", "target": "+15559876543"}, "2": {"action": "hang_up"}}
    doc = {**RECEPTIONIST, "name": f"keypad-{digit}", "greeting": "Press one for sales.", "actions": {"dtmf": keypad}}
    with sip.service.client(sip.key) as c:
        agent = c.post("/v1/agents", json=doc).json()
    subst = {"DTMF": str(SIPP_PCAPS / f"dtmf_2833_{digit}.pcap"), "REFER_TO": "sip:\\+15559876543@127\\.0\\.0\\.1"}
    run_sipp("keypad", sip.sip_port, tmp_path, user=agent["name"], subst=subst)
    with sip.service.client(sip.key) as c:
        for _ in range(50):
            call = c.get("/v1/calls", params={"agent_id": agent["id"]}).json()[0]
            if call["status"] != "active":
                break
            time.sleep(0.2)
        detail = c.get(f"/v1/calls/{call['id']}").json()
    assert detail["end_reason"] == ending
    actions = [e["data"] for e in detail["events"] if e["kind"] == "action"]
    assert actions and actions[0]["result"] == "done", actions


def test_a_mapped_number_reaches_its_agent(sip: SipService) -> None:
    sip.service.assign_number("+1 (555) 010-0000", "sip-tests")
    with sip.service.client(sip.key) as c:
        r = c.post("/v1/numbers", json={"number": "+1 (555) 010-0000", "agent_id": sip.agent["id"]})
        assert r.status_code == 201, r.text
    peer = RawPeer(sip.sip_port)
    uri = f"sip:+15550100000@127.0.0.1:{sip.sip_port}"
    try:
        peer.send("INVITE", uri, 1, "z9hG4bKnum1")
        peer.until("180")  # routed: the agent's models are loading
        peer.send("CANCEL", uri, 1, "z9hG4bKnum1")
        assert "CSeq: 1 CANCEL" in peer.until("200")[1]
        _, terminated = peer.until("487")
        to_tag = next(line for line in terminated.split("\r\n") if line.startswith("To:")).split("tag=")[1]
        peer.send("ACK", uri, 1, "z9hG4bKnum1", to_tag)
    finally:
        peer.sock.close()


def test_the_agent_presses_keys_as_rfc4733_telephone_events(sip: SipService) -> None:
    """A flow's ``send_dtmf`` after the greeting (an agent navigating an IVR): each key reaches the far end as
    telephone-event packets on the call's RTP, in order, with the payload type the far end offered."""
    flow = {"start": "ivr", "nodes": {"ivr": {"terminal": True, "on_enter": [{"send_dtmf": "12"}]}}}
    doc = {**RECEPTIONIST, "name": "presses-keys", "greeting": "Hello.", "flow": flow}
    with sip.service.client(sip.key) as c:
        assert c.post("/v1/agents", json=doc).status_code == 201
    peer = RawPeer(sip.sip_port)
    uri = f"sip:presses-keys@127.0.0.1:{sip.sip_port}"
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    offer = (
        f"v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {media.getsockname()[1]} RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n"
    )
    keys: list[int] = []
    try:
        peer.send("INVITE", uri, 1, "z9hG4bKkeys1", body=offer)
        _, ok = peer.until("200", timeout=60)
        to_tag = next(line for line in ok.split("\r\n") if line.startswith("To:")).split("tag=")[1]
        peer.send("ACK", uri, 1, "z9hG4bKkeys2", to_tag)
        media.settimeout(1.0)
        deadline, seen = time.monotonic() + 20, set()
        while time.monotonic() < deadline and len(keys) < 2:
            try:
                packet = media.recv(2048)
            except TimeoutError:
                continue
            if packet[1] & 0x7F == 96:
                timestamp = int.from_bytes(packet[4:8], "big")
                if timestamp not in seen:  # one event, many packets: keyed by its RTP timestamp
                    seen.add(timestamp)
                    keys.append(packet[12])
        peer.send("BYE", uri, 2, "z9hG4bKkeys3", to_tag)
        peer.until("200")
    finally:
        media.close()
        peer.sock.close()
    assert keys == [1, 2]

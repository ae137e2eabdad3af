"""The call cap at twice the cap on a carrier's doors: a worker full of real Twilio media-stream calls answers
further answer webhooks 503 + Retry-After at once and further SIP INVITEs 503 + Retry-After (with the reason as
a Warning), while the admitted calls play on with no underrun, and a freed slot takes a call again.

(tests/test_worker_cap.py does the same with talk sockets: 1013 and the reason.)"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest

from .support.service import Service, running_service
from .support.sip import free_udp_port, rtp_range
from .support.twilio import PUBLIC, SID, TOKEN, signed_post, stream_of, stream_url, voice_form
from .support.twilio_peer import TwilioPeer
from .support.worker_calls import make_agent, readyz, wait_for

CAP = 3


@pytest.fixture(scope="module")
def sip_port() -> int:
    return free_udp_port()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, sip_port: int) -> Iterator[Service]:
    env = {"PARLEY_MAX_CALLS": str(CAP), "PARLEY_SIP_PORT": str(sip_port), "PARLEY_SIP_RTP_PORTS": rtp_range(),
           "PARLEY_TWILIO_ACCOUNT_SID": SID, "PARLEY_TWILIO_AUTH_TOKEN": TOKEN,
           "PARLEY_PUBLIC_URL": PUBLIC}  # fmt: skip
    with running_service(tmp_path_factory.mktemp("worker-cap-carriers"), **env) as svc:
        yield svc


def answer(service: Service, agent_id: str) -> tuple[int, str, str, float]:
    """Twilio's answer webhook for a new call: status, Retry-After, body, and how long the answer took."""
    t0 = time.monotonic()
    r = signed_post(service, f"/telephony/twilio/voice?agent={agent_id}", voice_form())
    return r.status_code, r.headers.get("retry-after", ""), r.text, time.monotonic() - t0


def invite(port: int) -> tuple[int, dict[str, str], float]:
    """One INVITE with an SDP offer (PCMU) to the SIP endpoint: the final status, its headers, the time taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        me, tag = sock.getsockname()[1], secrets.token_hex(4)
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {free_udp_port(even=True)} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")  # fmt: skip
        message = (
            f"INVITE sip:service@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{tag}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller@127.0.0.1>;tag={tag}\r\n"
            "To: <sip:service@127.0.0.1>\r\n"
            f"Call-ID: {tag}@cap-test\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@127.0.0.1:{me}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        t0 = time.monotonic()
        sock.sendto(message.encode(), ("127.0.0.1", port))
        while True:  # past any provisional answer (100 Trying)
            reply = sock.recv(65535).decode(errors="replace")
            status = int(reply.split(" ", 2)[1])
            if status >= 200:
                break
        took = time.monotonic() - t0
        lines = reply.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        to = headers.get("to", "")
        ack = (
            message.split("\r\n\r\n", 1)[0].replace("INVITE sip", "ACK sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        )
        ack = ack.replace("To: <sip:service@127.0.0.1>", f"To: {to}").replace("Content-Type: application/sdp\r\n", "")
        sock.sendto((ack.rsplit("Content-Length:", 1)[0] + "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
    return status, headers, took


async def _listen(peer: TwilioPeer, stop: asyncio.Event) -> None:
    await peer.wait_played(25)
    await stop.wait()


def test_twice_the_cap_on_webhooks_and_sip(service: Service, key: str, sip_port: int) -> None:
    agent_id = make_agent(service, key)
    url, headers = stream_url(service)

    async def scenario() -> list[TwilioPeer]:
        stop = asyncio.Event()
        peers, tasks = [], []
        for k in range(CAP):
            status, _, twiml, _ = await asyncio.to_thread(answer, service, agent_id)
            assert status == 200, twiml
            sid = "CA" + secrets.token_hex(16)
            peer = TwilioPeer(url, stream_of(twiml)[1], headers, call_sid=sid, stream_sid=f"MZ{k:032d}")
            peers.append(peer)
            tasks.append(asyncio.create_task(peer.run(lambda p: _listen(p, stop))))
        await asyncio.to_thread(wait_for, lambda: readyz(service)[1]["calls"]["in_use"] == CAP, 60, "a full worker")
        await asyncio.wait_for(asyncio.gather(*(p.wait_played(25) for p in peers)), 60)
        for _ in range(CAP):  # twice the cap: as many again at each door
            status, retry, body, took = await asyncio.to_thread(answer, service, agent_id)
            assert status == 503 and retry.isdigit() and "busy" in body and took < 1.0, (status, retry, body, took)
            sip, sip_headers, took = await asyncio.to_thread(invite, sip_port)
            assert sip == 503 and sip_headers.get("retry-after", "").isdigit() and took < 1.0, (sip, sip_headers)
            assert "at-capacity" in sip_headers.get("warning", ""), sip_headers
        ready_status, ready = await asyncio.to_thread(readyz, service)
        assert ready_status == 503 and ready["not_ready"] == ["capacity"], ready
        await asyncio.sleep(3)  # the admitted calls play on
        ended = [p.now() for p in peers]  # each peer's own clock
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for p, end in zip(peers, ended, strict=True):  # what arrived after the hang-up is no part of the measure
            p.events = [e for e in p.events if e.t <= end]
        return peers

    peers = asyncio.run(scenario())
    for peer in peers:
        media = [e.t for e in peer.kinds("media")]
        gap = max(b - a for a, b in pairwise(media))
        # arrival gaps on the wire; underruns as test_telephony_twilio.py counts them (a player with no buffer)
        assert peer.violations == [] and gap < 0.3 and peer.underruns <= 5, (peer.violations, gap, peer.underruns)
        assert peer.agent_frames > 150, peer.agent_frames  # 20 ms frames: over 3 s of the greeting heard
    wait_for(lambda: readyz(service)[1]["calls"]["in_use"] == 0, 60, "the slots freed")
    assert answer(service, agent_id)[0] == 200  # a freed slot takes a call again
    with service.client(key) as c:
        calls = c.get("/v1/calls", params={"transport": "twilio"}).json()
    assert len([x for x in calls if x["status"] == "ended"]) == CAP, [(x["status"], x["end_reason"]) for x in calls]

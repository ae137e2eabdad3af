"""The SIP endpoint of a real `parley serve` under attack (issue 8, finding 9, and the SIP part of timed fuzzing).

INVITEs that are never ACKed used to hold an RTP port each for 32 s, so a modest flood from one address kept
every real caller out (and they got 500). Here a flooder gets 486/503 with Retry-After, never 500, a caller
from another address still gets 200 and media, and the ports come back at the short ACK timeout. Then random
mutations of real INVITE/REGISTER/OPTIONS messages: each is answered or dropped within 50 ms, nothing is a
500, and a well-formed OPTIONS is still answered afterwards.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .support.service import Service, running_service
from .support.sip import free_udp_port
from .support.sip_fuzz import known_nasty, mutate

ACK_TIMEOUT_S = 2.0
MAX_UNACKED = 3
BURST = 6
RTP_EVEN_PORTS = 4
FUZZ_BUDGET_S = 0.050
STALL_S = 0.25  # the longest a concurrent call's audio may stop (as tests/test_security_fuzz.py)

AGENT: dict[str, Any] = {
    "name": "sip-guarded",
    "system_prompt": "Answer briefly.",
    "greeting": "Hello, you are through to the guarded line.",
    "vad": {"provider": "energy"},
    "stt": {"provider": "canned", "options": {"text": "hello"}},
    "llm": {"provider": "canned", "options": {"default": "Still here."}},
    "tts": {"provider": "tone", "fallback": None},
}


@dataclass
class Guarded:
    service: Service
    sip_port: int
    rtp: tuple[int, int]
    agent: str


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """One service with a tiny RTP range (4 even ports) and tight per-source limits."""
    port = free_udp_port()
    base = random.randrange(30000, 60000, 200)
    env = {
        "PARLEY_SIP_PORT": str(port),
        "PARLEY_SIP_RTP_PORTS": f"{base}-{base + 2 * RTP_EVEN_PORTS - 1}",
        "PARLEY_SIP_ACK_TIMEOUT_S": str(ACK_TIMEOUT_S),
        "PARLEY_SIP_MAX_UNACKED_PER_SOURCE": str(MAX_UNACKED),
        "PARLEY_SIP_INVITES_PER_S": "2",
        "PARLEY_SIP_INVITE_BURST": str(BURST),
    }
    with running_service(tmp_path_factory.mktemp("sip-guard"), **env) as svc:
        key = svc.create_key("sip-guard")
        with svc.client(key) as c:
            r = c.post("/v1/agents", json=AGENT)
            assert r.status_code == 201, r.text
        yield Guarded(svc, port, (base, base + 2 * RTP_EVEN_PORTS - 1), AGENT["name"])


def free_rtp_ports(g: Guarded) -> int:
    """Even ports of the service's RTP range nobody holds (bound and let go at once)."""
    free = 0
    for port in range(g.rtp[0], g.rtp[1] + 1, 2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                free += 1
            except OSError:
                pass
    return free


def wait_free_ports(g: Guarded, want: int, timeout: float) -> float:
    """Seconds until ``want`` RTP ports are free again; fails after ``timeout``."""
    start = time.monotonic()
    while (free := free_rtp_ports(g)) != want:
        if time.monotonic() - start > timeout:
            pytest.fail(f"{free} of {RTP_EVEN_PORTS} RTP ports free after {timeout} s, expected {want}")
        time.sleep(0.1)
    return time.monotonic() - start


class Peer:
    """A raw SIP peer on its own loopback address (each test its own, so per-source limits stay apart)."""

    def __init__(self, host: str, sip_port: int) -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.local = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", sip_port)
        self.media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.media.bind((host, 0))

    def close(self) -> None:
        self.sock.close()
        self.media.close()

    def invite(self, user: str, call_id: str, cseq: int = 1, to_tag: str = "", method: str = "INVITE") -> None:
        sdp = (
            ""
            if method != "INVITE"
            else (
                f"v=0\r\no=peer 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
                f"m=audio {self.media.getsockname()[1]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            )
        )
        to = f"<sip:{user}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        head = (
            f"{method} sip:{user}@127.0.0.1:{self.target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.local};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            f"From: <sip:peer@{self.host}>;tag=peer\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:peer@{self.host}:{self.local}>\r\nMax-Forwards: 70\r\n"
        )
        if sdp:
            head += "Content-Type: application/sdp\r\n"
        self.sock.sendto(f"{head}Content-Length: {len(sdp)}\r\n\r\n{sdp}".encode(), self.target)

    def finals(self, call_ids: set[str], timeout: float) -> dict[str, str]:
        """The first final response to each Call-ID (the whole text), within ``timeout``."""
        got: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while set(got) != call_ids and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                text = self.sock.recv(65535).decode()
            except TimeoutError:
                break
            call_id = header(text, "Call-ID")
            status = int(text.split(" ", 2)[1]) if text.startswith("SIP/2.0 ") else 0
            if call_id in call_ids and status >= 200 and call_id not in got:
                got[call_id] = text
        return got


def header(text: str, name: str) -> str:
    m = re.search(rf"(?im)^{re.escape(name)}:\s*(.*?)\r?$", text)
    return m.group(1).strip() if m else ""


def status_of(text: str) -> int:
    return int(text.split(" ", 2)[1])


def test_an_unacked_invite_flood_cannot_keep_a_real_caller_out(guarded: Guarded) -> None:
    """Finding 9: 12 INVITEs never ACKed from one address; a caller from another still gets 200 and audio."""
    assert free_rtp_ports(guarded) == RTP_EVEN_PORTS
    with ExitStack() as stack:
        flooder, caller = Peer("127.0.0.11", guarded.sip_port), Peer("127.0.0.12", guarded.sip_port)
        stack.callback(flooder.close)
        stack.callback(caller.close)
        flood = {f"flood-{i}-{uuid.uuid4()}" for i in range(12)}
        for call_id in flood:
            flooder.invite(guarded.agent, call_id)
        answers = flooder.finals(flood, timeout=10)
        statuses = sorted(status_of(t) for t in answers.values())
        assert len(answers) == len(flood), statuses
        assert 500 not in statuses, statuses
        assert statuses.count(200) <= MAX_UNACKED, statuses
        for text in answers.values():
            if status_of(text) != 200:
                assert status_of(text) in (486, 503) and header(text, "Retry-After").isdigit(), text[:300]

        call_id = f"caller-{uuid.uuid4()}"
        caller.invite(guarded.agent, call_id)
        ok = caller.finals({call_id}, timeout=10)[call_id]
        assert status_of(ok) == 200, ok[:300]
        to_tag = header(ok, "To").split("tag=")[1]
        caller.invite(guarded.agent, call_id, to_tag=to_tag, method="ACK")
        caller.media.settimeout(5)
        assert len(caller.media.recv(2048)) == 12 + 160  # the agent's audio, PCMU 20 ms a packet

        # the flood's ports come back at the ACK timeout (not after 32 s); the caller's call keeps its own
        assert wait_free_ports(guarded, RTP_EVEN_PORTS - 1, timeout=ACK_TIMEOUT_S + 4) <= ACK_TIMEOUT_S + 4
        caller.invite(guarded.agent, call_id, cseq=2, to_tag=to_tag, method="BYE")
        wait_free_ports(guarded, RTP_EVEN_PORTS, timeout=5)


def test_a_200_never_acked_frees_its_port_at_the_ack_timeout(guarded: Guarded) -> None:
    peer = Peer("127.0.0.16", guarded.sip_port)
    try:
        call_id = f"noack-{uuid.uuid4()}"
        peer.invite(guarded.agent, call_id)
        ok = peer.finals({call_id}, timeout=10)[call_id]
        assert status_of(ok) == 200
        sent = time.monotonic()
        port = int(re.search(r"m=audio (\d+)", ok).group(1))  # type: ignore[union-attr]
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                    break
                except OSError:
                    pass
            assert time.monotonic() - sent < ACK_TIMEOUT_S + 3, "the RTP port is still held"
            time.sleep(0.05)
        assert time.monotonic() - sent >= ACK_TIMEOUT_S - 0.5  # not before the caller had time to ACK
    finally:
        peer.close()


def test_out_of_rtp_ports_is_503_with_retry_after(guarded: Guarded) -> None:
    """Every RTP port taken (here by the test itself): the INVITE gets 503 and Retry-After, not 500."""
    wait_free_ports(guarded, RTP_EVEN_PORTS, timeout=ACK_TIMEOUT_S + 4)
    held = []
    try:
        for port in range(guarded.rtp[0], guarded.rtp[1] + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            held.append(s)
        peer = Peer("127.0.0.13", guarded.sip_port)
        try:
            call_id = f"noport-{uuid.uuid4()}"
            peer.invite(guarded.agent, call_id)
            answer = peer.finals({call_id}, timeout=10)[call_id]
        finally:
            peer.close()
        assert status_of(answer) == 503, answer[:300]
        assert header(answer, "Retry-After").isdigit(), answer[:300]
    finally:
        for s in held:
            s.close()


def test_invites_are_rate_limited_per_source(guarded: Guarded) -> None:
    """Beyond the burst, a source's INVITEs get 503 with Retry-After; another source is not affected."""
    hot, other = Peer("127.0.0.14", guarded.sip_port), Peer("127.0.0.17", guarded.sip_port)
    try:
        ids = [f"rate-{i}-{uuid.uuid4()}" for i in range(BURST + 6)]
        answers: dict[str, str] = {}
        for call_id in ids:  # one after the other: the unacknowledged cap never applies, only the rate
            hot.invite("nobody-here", call_id)  # 404 each
            answers.update(hot.finals({call_id}, timeout=5))
        statuses = [status_of(answers[c]) for c in ids]
        assert statuses[:BURST] == [404] * BURST, statuses
        limited = [answers[c] for c in ids if status_of(answers[c]) == 503]
        assert len(limited) >= 4, statuses
        assert all(header(t, "Retry-After").isdigit() for t in limited)
        call_id = f"other-{uuid.uuid4()}"
        other.invite("nobody-here", call_id)
        assert status_of(other.finals({call_id}, timeout=10)[call_id]) == 404
    finally:
        hot.close()
        other.close()


def _options(host: str, local: int, sip_port: int, call_id: str) -> bytes:
    return (
        f"OPTIONS sip:{AGENT['name']}@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{local};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
        f"From: <sip:probe@{host}>;tag=pr\r\nTo: <sip:{AGENT['name']}@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class LiveSipCall:
    """A call running beside the fuzzer: its RTP must keep coming every 20 ms (the longest gap is measured)."""

    def __init__(self, g: Guarded, host: str) -> None:
        self.g, self.peer, self.call_id = g, Peer(host, g.sip_port), f"live-{uuid.uuid4()}"
        self.peer.invite(g.agent, self.call_id)
        ok = self.peer.finals({self.call_id}, timeout=10)[self.call_id]
        assert status_of(ok) == 200, ok[:300]
        self.to_tag = header(ok, "To").split("tag=")[1]
        self.peer.invite(g.agent, self.call_id, to_tag=self.to_tag, method="ACK")
        self.max_gap, self.packets = 0.0, 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self.peer.media.settimeout(5)
        self.peer.media.recv(2048)  # the first packet: media flows
        self._thread.start()

    def _listen(self) -> None:
        """Count the agent's packets and answer each one (so the call never ends as rtp-timeout)."""
        last = time.monotonic()
        self.peer.media.settimeout(0.5)
        while not self._stop.is_set():
            addr: tuple[str, int] | None = None
            try:
                addr = self.peer.media.recvfrom(2048)[1]
            except TimeoutError:
                pass
            except OSError as exc:  # ICMP from an earlier send: note it, keep listening
                self.errors.append(repr(exc))
            now = time.monotonic()
            self.max_gap, last = max(self.max_gap, now - last), now
            if addr is not None:
                self.packets += 1
                header_ = struct.pack("!BBHII", 0x80, 0, self.packets & 0xFFFF, self.packets * 160, 0x5EED)
                self.peer.media.sendto(header_ + b"\xff" * 160, addr)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.peer.invite(self.g.agent, self.call_id, cseq=2, to_tag=self.to_tag, method="BYE")
        self.peer.close()


def _fuzz(g: Guarded, peer: Peer, mutants: list[bytes]) -> tuple[list[tuple[float, bytes]], dict[int, int]]:
    """Each mutant, then a well-formed OPTIONS: how long until its 200 (over budget: listed), and what came back."""
    slow: list[tuple[float, bytes]] = []
    statuses: dict[int, int] = {}
    for i, mutant in enumerate(mutants):
        probe_id = f"probe-{i}"
        sent = time.monotonic()
        peer.sock.sendto(mutant, peer.target)
        peer.sock.sendto(_options(peer.host, peer.local, g.sip_port, probe_id), peer.target)
        while True:
            peer.sock.settimeout(1.0)
            text = peer.sock.recv(65535).decode("utf-8", "replace")
            if not text.startswith("SIP/2.0 "):
                continue  # Parley's own requests (a BYE once an unacknowledged 200 gives up)
            status = status_of(text)
            if header(text, "Call-ID") == probe_id:
                assert status == 200, text[:300]
                break
            statuses[status] = statuses.get(status, 0) + 1
            assert status not in (500, 502, 504), f"mutant {i} got {text[:300]!r} for {mutant[:400]!r}"
            if status == 503:
                assert header(text, "Retry-After").isdigit(), text[:300]
        if (took := time.monotonic() - sent) > FUZZ_BUDGET_S:
            slow.append((took, mutant[:300]))
    return slow, statuses


def test_mutated_messages_are_answered_or_dropped_within_50_ms(guarded: Guarded) -> None:
    """Timed fuzzing: each mutant answered or dropped (a following OPTIONS answered) within 50 ms, no 500,
    and a live call beside it never misses its audio for more than STALL_S."""
    wait_free_ports(guarded, RTP_EVEN_PORTS, timeout=ACK_TIMEOUT_S + 4)
    rng = random.Random(20261201)
    live = LiveSipCall(guarded, "127.0.0.18")
    peer = Peer("127.0.0.15", guarded.sip_port)
    try:
        fixed = known_nasty(guarded.agent, guarded.sip_port, peer.host, peer.local)
        mutants = fixed + [mutate(rng, guarded.agent, guarded.sip_port, peer.host, peer.local, i) for i in range(1500)]
        started, heard = time.monotonic(), live.packets
        slow, statuses = _fuzz(guarded, peer, mutants)
        fuzzed_s, heard = time.monotonic() - started, live.packets - heard
        assert not slow, f"{len(slow)} of {len(mutants)} mutants took over 50 ms: {sorted(slow, reverse=True)[:3]}"
        final = "final-probe"
        peer.sock.sendto(_options(peer.host, peer.local, guarded.sip_port, final), peer.target)
        assert status_of(peer.finals({final}, timeout=2)[final]) == 200
    finally:
        peer.close()
        live.stop()
    assert heard >= 0.8 * fuzzed_s / 0.020, f"{heard} RTP packets in {fuzzed_s:.1f} s of fuzzing ({live.errors[:3]})"
    assert live.max_gap <= STALL_S, f"the live call's audio stopped for {live.max_gap:.3f} s"
    log = Path(guarded.service.log).read_text()
    assert "Traceback" not in log and "sip_message_failed" not in log and "sip_invite_failed" not in log, log[-3000:]
    assert statuses.get(400, 0) > 0, statuses  # the mutations did reach the parser's error answers

"""Kamailio's dispatcher in front of two Parley processes: calls are spread round robin, and survive a Parley dying.

Two `parley serve` processes (worker ids parley-a and parley-b) share one PostgreSQL database, so every call
record is in one place and its ``worker_id`` says which process answered. Kamailio (the Debian package, config
in deploy/kamailio/kamailio.cfg) balances SIPp's calls over the two SIP endpoints. After one Parley is stopped,
the next calls all reach the other one: the first through the failure route (the INVITE to the dead process
times out and is retried on the next destination), the rest because that destination is marked inactive.
Kamailio's OPTIONS keepalives bring a restarted Parley back, and find a dead one before any call does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from .support.service import Service, backend_env, running_service
from .support.sip import free_udp_port, need, rtp_range

KAMAILIO_DIR = Path(__file__).parent / "kamailio"  # the SIPp scenarios
KAMAILIO_CFG = Path(__file__).parents[1] / "deploy/kamailio/kamailio.cfg"  # the shipped configuration, as is
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
AGENT = {  # model-free: energy VAD, canned STT and LLM, tone TTS (as bench/load.py)
    "name": "balanced-canned",
    "system_prompt": "Canned replies for the balancer test.",
    "greeting": "Hello, thanks for calling.",
    "vad": {"provider": "energy"},
    "stt": {"provider": "canned", "options": {"text": "what time do you open"}},
    "llm": {"provider": "canned", "options": {"default": "We open at nine in the morning."}},
    "tts": {"provider": "tone", "fallback": None},
}
WORKERS = ("parley-a", "parley-b")


@dataclass
class Parley:
    worker: str
    sip_port: int
    service: Service
    stack: ExitStack  # closing it stops the process (SIGTERM, as a service manager would)
    running: bool = True

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.sip_port}"


@dataclass
class Cluster:
    database_url: str
    tmp: pytest.TempPathFactory
    stack: ExitStack
    kamailio_port: int = 0
    kamailio_log: Path = Path()
    parleys: dict[str, Parley] = field(default_factory=dict)

    def start(self, worker: str, sip_port: int) -> Parley:
        """A `parley serve` on ``sip_port`` with its own RTP range, sharing the database; stopped at the end."""
        taken = {p.service.env["PARLEY_SIP_RTP_PORTS"] for p in self.parleys.values() if p.running}
        while (rtp := rtp_range()) in taken:  # ranges are aligned to 200 ports: distinct means disjoint
            pass
        stack = self.stack.enter_context(ExitStack())
        svc = stack.enter_context(
            running_service(self.tmp.mktemp(worker), PARLEY_DATABASE_URL=self.database_url,
                            PARLEY_SIP_PORT=str(sip_port), PARLEY_SIP_RTP_PORTS=rtp, PARLEY_WORKER_ID=worker)
        )  # fmt: skip
        self.parleys[worker] = Parley(worker, sip_port, svc, stack)
        return self.parleys[worker]

    def stop(self, worker: str) -> None:
        parley = self.parleys[worker]
        parley.stack.close()
        parley.running = False
        assert "Traceback" not in parley.service.log.read_text()

    def log(self) -> str:
        return self.kamailio_log.read_text()

    def wait_for_log(self, text: str, seen: int = 0, timeout: float = 15) -> None:
        """Until Kamailio has logged ``text`` more than ``seen`` times."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) <= seen:
            assert time.monotonic() < deadline, f"no {text!r} in the kamailio log:\n{self.log()[-3000:]}"
            time.sleep(0.2)


def _options_ok(port: int, timeout: float) -> bool:
    """Kamailio answers an OPTIONS to itself: it is up and listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        local = s.getsockname()[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {uuid.uuid4()}@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(request.encode(), ("127.0.0.1", port))
        try:
            return s.recv(65535).startswith(b"SIP/2.0 200")
        except OSError:  # timeout, or port unreachable
            return False


def _start_kamailio(stack: ExitStack, work: Path, destinations: list[str]) -> tuple[int, Path]:
    """Kamailio in the foreground on a free UDP port, balancing over ``destinations``; stopped with ``stack``."""
    sbin = Path("/usr/sbin/kamailio")  # not on a normal user's PATH
    kamailio = str(sbin) if shutil.which("kamailio") is None and sbin.exists() else need("kamailio")
    port = free_udp_port()
    ds_list = work / "dispatcher.list"
    ds_list.write_text("".join(f"1 {uri}\n" for uri in destinations))
    cfg = work / "kamailio.cfg"
    template = KAMAILIO_CFG.read_text()
    cfg.write_text(template.replace("@LISTEN_PORT@", str(port)).replace("@DISPATCHER_LIST@", str(ds_list)))
    log = work / "kamailio.log"
    cmd = [kamailio, "-f", str(cfg), "-DD", "-E", "-Y", str(work), "-w", str(work), "-m", "32", "-M", "8"]
    if MODULES.is_dir():
        cmd += ["-L", str(MODULES)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
    stack.callback(_stop_kamailio, proc)
    deadline = time.monotonic() + 20
    while not _options_ok(port, 0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"kamailio did not start:\n{log.read_text()[-3000:]}")
    return port, log


def _stop_kamailio(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    try:  # its children (the UDP worker, timers) are in the session this test started
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh PostgreSQL database, parley-a (started first: it migrates), parley-b, one agent, Kamailio."""
    with ExitStack() as stack:
        database_url = stack.enter_context(backend_env("postgres", request))["PARLEY_DATABASE_URL"]
        cluster = Cluster(database_url, tmp_path_factory, stack)
        for worker in WORKERS:
            cluster.start(worker, free_udp_port())
        first = cluster.parleys[WORKERS[0]].service
        with first.client(first.create_key("kamailio-tests")) as c:
            r = c.post("/v1/agents", json=AGENT)
            assert r.status_code == 201, r.text
        uris = [p.uri for p in cluster.parleys.values()]
        cluster.kamailio_port, cluster.kamailio_log = _start_kamailio(stack, tmp_path_factory.mktemp("kamailio"), uris)
        yield cluster


def _sipp(cluster: Cluster, scenario: str, n: int, workdir: Path, pause_ms: int = 500) -> list[str]:
    """The SIPp command for ``n`` calls of tests/kamailio/<scenario>.xml, one after another (-l 1), via Kamailio."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{scenario}.xml"
    path.write_text((KAMAILIO_DIR / f"{scenario}.xml").read_text().replace("@PAUSE_MS@", str(pause_ms)))
    return [need("sipp"), "-sf", str(path), "-m", str(n), "-l", "1", "-r", "10", "-timeout", "60s", "-timeout_error",
            "-nostdin", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_udp_port()),
            "-mp", str(free_udp_port(even=True)), "-trace_err", "-trace_msg", "-s", str(AGENT["name"]),
            f"127.0.0.1:{cluster.kamailio_port}"]  # fmt: skip


def _check_sipp(cluster: Cluster, returncode: int, output: str, workdir: Path) -> None:
    if returncode != 0:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(workdir.glob("*_*.log")))
        pytest.fail(f"sipp exited {returncode}\n{output[-3000:]}{logs}\n--- kamailio\n{cluster.log()[-4000:]}")


def place_calls(cluster: Cluster, n: int, workdir: Path) -> list[dict[str, Any]]:
    """``n`` short calls to the agent through Kamailio; fails the test unless all succeed.

    Returns the call records of these calls, oldest first, once they have ended as the caller hung up.
    """
    before = len(asyncio.run(_calls(cluster.database_url)))
    result = subprocess.run(_sipp(cluster, "short_call", n, workdir), cwd=workdir, capture_output=True, text=True,
                            timeout=90)  # fmt: skip
    _check_sipp(cluster, result.returncode, result.stdout + result.stderr, workdir)
    calls = ended_calls(cluster, before + n)[before:]
    assert len(calls) == n, calls
    assert all(c["transport"] == "sip" and c["end_reason"] == "caller-hangup" for c in calls), calls
    return calls


def ended_calls(cluster: Cluster, count: int) -> list[dict[str, Any]]:
    """The call records, oldest first, once there are ``count`` and none is still active."""
    deadline = time.monotonic() + 20
    while True:
        calls = asyncio.run(_calls(cluster.database_url))
        if len(calls) >= count and all(c["status"] != "active" for c in calls):
            return calls
        assert time.monotonic() < deadline, calls
        time.sleep(0.2)


async def _calls(database_url: str) -> list[dict[str, Any]]:
    """Every call record, oldest first (``worker_id`` is not in the API's call view: read the shared database)."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT id, worker_id, provider_call_id, transport, status, end_reason FROM calls ORDER BY started_at"
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def _turns(database_url: str, call_id: uuid.UUID) -> int:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM turns WHERE call_id = $1", call_id))
    finally:
        await conn.close()


def test_round_robin_then_failover_when_a_parley_stops(cluster: Cluster, tmp_path: Path) -> None:
    workers = [c["worker_id"] for c in place_calls(cluster, 4, tmp_path / "round1")]
    assert sorted(workers) == ["parley-a", "parley-a", "parley-b", "parley-b"], workers
    assert workers[0] != workers[1] and workers[:2] == workers[2:], workers  # strictly alternating
    log = cluster.log()
    assert log.count("dispatch INVITE") == 4, log[-3000:]
    # Record-Route kept Kamailio in the dialogs: every ACK and BYE went through it
    assert log.count("in-dialog ACK") == 4 and log.count("in-dialog BYE") == 4, log[-3000:]

    # round robin gives the next call to the Parley that took the first: stop that one
    victim, survivor = workers[0], workers[1]
    cluster.stop(victim)
    calls = place_calls(cluster, 3, tmp_path / "round2")
    assert [c["worker_id"] for c in calls] == [survivor] * 3, calls
    log = cluster.log()
    # the first call after the stop went to the dead Parley, timed out there and was retried on the live one
    assert log.count("failover: ") == 2 and f"failover: {cluster.parleys[victim].uri} failed" in log, log[-3000:]
    assert log.count("dispatch INVITE") == 7, log[-3000:]
    assert "Traceback" not in cluster.parleys[survivor].service.log.read_text()


def test_keepalives_bring_a_parley_back_and_find_a_dead_one(cluster: Cluster, tmp_path: Path) -> None:
    for parley in list(cluster.parleys.values()):
        if not parley.running:  # restarted on its old address: the OPTIONS keepalives see it answer again
            seen = cluster.log().count(up := f"destination up: OPTIONS {parley.uri}")
            cluster.start(parley.worker, parley.sip_port)
            cluster.wait_for_log(up, seen)
    workers = [c["worker_id"] for c in place_calls(cluster, 2, tmp_path / "both")]
    assert sorted(workers) == list(WORKERS), workers

    # a Parley that stops between calls is marked down by the keepalives alone: no call has to fail over
    failovers = cluster.log().count("failover: ")
    seen = cluster.log().count(down := f"destination down: OPTIONS {cluster.parleys[WORKERS[0]].uri}")
    cluster.stop(WORKERS[0])
    cluster.wait_for_log(down, seen)
    workers = [c["worker_id"] for c in place_calls(cluster, 2, tmp_path / "one")]
    assert workers == [WORKERS[1]] * 2, workers
    assert cluster.log().count("failover: ") == failovers
    assert "Traceback" not in cluster.parleys[WORKERS[1]].service.log.read_text()


def test_a_stopping_parley_hangs_up_through_kamailio(cluster: Cluster, tmp_path: Path) -> None:
    """Parley's BYE (it ends its calls when stopped) follows the route set back through Kamailio to the caller."""
    if not any(p.running for p in cluster.parleys.values()):
        seen = cluster.log().count(up := f"destination up: OPTIONS {cluster.parleys[WORKERS[0]].uri}")
        cluster.start(WORKERS[0], cluster.parleys[WORKERS[0]].sip_port)
        cluster.wait_for_log(up, seen)
    before = asyncio.run(_calls(cluster.database_url))
    byes = cluster.log().count("in-dialog BYE")
    with (tmp_path / "sipp.out").open("w+") as out:
        sipp = subprocess.Popen(_sipp(cluster, "hangup_by_parley", 1, tmp_path), cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while len(calls := asyncio.run(_calls(cluster.database_url))) == len(before):
                assert sipp.poll() is None and time.monotonic() < deadline, calls
                time.sleep(0.2)
            # stopped once the conversation runs (the greeting's turn is written), not in the instant after
            # the record is created: LiveCall.end() before LiveCall.run() has its runner is dropped
            while not asyncio.run(_turns(cluster.database_url, calls[-1]["id"])):
                assert sipp.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            cluster.stop(calls[-1]["worker_id"])
            returncode = sipp.wait(30)
        finally:
            if sipp.poll() is None:
                sipp.kill()
                sipp.wait()
        out.seek(0)
        _check_sipp(cluster, returncode, out.read(), tmp_path)
    call = ended_calls(cluster, len(before) + 1)[-1]
    assert call["status"] == "ended", call
    assert cluster.log().count("in-dialog BYE") == byes + 1, cluster.log()[-3000:]
    # a stopped worker drains (issue 15): what is still live at PARLEY_DRAIN_SECS ends as worker-drain, with a BYE
    assert call["end_reason"] == "worker-drain", call

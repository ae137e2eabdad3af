"""Drain on SIGTERM, with a real `parley serve` and live talk calls: readiness false and SIP OPTIONS 503 at once,
new calls refused, no call cut before PARLEY_DRAIN_SECS, the rest ended as worker-drain with a clean end message,
every record and recording written, and the process exits 0.

20 live calls, as issue 15 asks: 14 outlast the drain deadline, 6 hang up during it."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from .support.service import Service, running_service
from .support.sip import free_udp_port
from .support.worker_calls import hang_up, make_agent, readyz, sip_options, start_calls, talk_url, wait_for

DRAIN_S = 4.0
STAYING, LEAVING = 14, 6


@pytest.fixture(scope="module")
def sip_port() -> int:
    return free_udp_port()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, sip_port: int) -> Iterator[Service]:
    env = {"PARLEY_DRAIN_SECS": str(DRAIN_S), "PARLEY_SIP_PORT": str(sip_port), "PARLEY_SIP_RTP_PORTS": "31000-31099"}
    with running_service(tmp_path_factory.mktemp("drain"), **env) as svc:
        yield svc


def _exit_status(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    raise AssertionError("parley serve did not exit")


def test_sigterm_drains_live_calls(service: Service, key: str, sip_port: int) -> None:
    agent_id = make_agent(service, key)
    assert sip_options(sip_port)[0] == 200

    async def scenario() -> tuple[list, float]:
        callers, tasks = await start_calls(service, key, agent_id, STAYING + LEAVING)
        assert all(c.call_id for c in callers), [c.refused for c in callers]
        await asyncio.sleep(1.5)
        os.kill(service.pid, signal.SIGTERM)
        t_term = time.monotonic()
        await asyncio.sleep(0.3)
        status, body = await asyncio.to_thread(readyz, service)
        assert status == 503 and "drain" in body["not_ready"] and body["calls"]["draining"], body
        assert await asyncio.to_thread(sip_options, sip_port) == (503, "30")
        refused, _ = await start_calls(service, key, agent_id, 1)
        assert refused[0].refused is not None and refused[0].refused[0] == 1013, refused[0]
        assert "shutting down" in refused[0].refused[1]
        await asyncio.sleep(1.0)  # some callers finish on their own during the drain
        leaving = callers[:LEAVING]
        await hang_up(leaving, tasks[:LEAVING])
        for c in leaving:
            assert c.end_reason == "caller-hangup", c
        await asyncio.wait_for(asyncio.gather(*tasks), DRAIN_S + 20)
        ends = time.monotonic() - t_term
        return callers, ends

    callers, ended_after = asyncio.run(scenario())
    for c in callers[LEAVING:]:
        assert c.end_reason == "worker-drain", c  # a clean end message, not a cut socket
        assert c.max_gap_s < 0.5, c.max_gap_s  # not cut, nor starved, before the deadline
    assert ended_after >= DRAIN_S - 0.2, ended_after
    assert _exit_status(service.pid, 30) == 0
    _check_records(Path(service.env["PARLEY_DATA_DIR"]), callers)


def _check_records(data_dir: Path, callers: list) -> None:
    """Every call ended, with its reason and a complete recording on disk."""
    db = sqlite3.connect(data_dir / "parley.db")
    try:
        rows = {
            r[0].replace("-", ""): r[1:]
            for r in db.execute("SELECT id, status, end_reason, recording_key, recording_bytes FROM calls")
        }
    finally:
        db.close()
    for k, c in enumerate(callers):
        status, reason, recording_key, size = rows[c.call_id.replace("-", "")]
        assert status == "ended" and reason == ("caller-hangup" if k < LEAVING else "worker-drain"), (status, reason)
        assert recording_key and size and size > 44 + 16_000 * 2 * 2  # the WAV header and over 2 s of stereo audio
        assert (data_dir / "recordings" / recording_key).stat().st_size == size


def test_drained_worker_refuses_connections(service: Service, key: str) -> None:
    """After the drain the process is gone: nothing answers (a load balancer had moved on already)."""

    async def dial() -> None:
        with pytest.raises((OSError, websockets.InvalidHandshake)):
            async with websockets.connect(talk_url(service, "x"), open_timeout=3):
                pass

    wait_for(lambda: not _alive(service.pid), 10, "the process to be gone")
    asyncio.run(dial())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True

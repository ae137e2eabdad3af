"""The call registry in Redis, with two real `parley serve` workers on one PostgreSQL and a redis-server of this
module's own (so it can be stopped and started again):

- each live call is registered under the worker holding it, with a TTL its heartbeat refreshes;
- a worker killed with SIGKILL: once its heartbeat expires, the other worker ends its calls as ``worker-lost``;
- Redis down: the call in progress goes on, new calls are refused with the reason, readiness says so, and service
  resumes (the live call registered again) when Redis returns.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from .support.service import Service, _admin_sql, free_port, running_service
from .support.worker_calls import hang_up, make_agent, readyz, start_calls, wait_for

TTL_S = 3.0


class RedisServer:
    """A redis-server on a free port, without persistence, that a test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = free_port(), workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        cmd = [exe, "--port", str(self.port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, 10, "redis-server to answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[list[Service]]:
    """Workers reg-a and reg-b on a fresh database."""
    dbname = f"parley_registry_{secrets.token_hex(4)}"
    asyncio.run(_admin_sql(f"CREATE DATABASE {dbname}"))
    env = {
        "PARLEY_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{dbname}",
        "PARLEY_REDIS_URL": redis_server.url,
        "PARLEY_REGISTRY_TTL_S": str(TTL_S),
    }
    with ExitStack() as stack:  # one after the other: two workers migrating one fresh database at once race
        services = [
            stack.enter_context(
                running_service(tmp_path_factory.mktemp(f"registry-{w}"), PARLEY_WORKER_ID=f"reg-{w}", **env)
            )
            for w in "ab"
        ]
        yield services
    asyncio.run(_admin_sql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))


@pytest.fixture(scope="module")
def service(workers: list[Service]) -> Service:
    return workers[1]  # the one that stays up: the module's key and agent are made through it


@pytest.fixture(scope="module")
def talker_id(service: Service, key: str) -> str:
    return make_agent(service, key)


def _listed(service: Service, key: str) -> bool:
    r = httpx.get(f"{service.url}/v1/calls", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return r.status_code == 200


def _call(service: Service, key: str, call_id: str) -> dict:
    r = httpx.get(f"{service.url}/v1/calls/{call_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_sigkilled_worker_calls_end_as_worker_lost(workers: list[Service], key: str, redis_server: RedisServer) -> None:
    a, b = workers
    agent_id = make_agent(b, key)
    r = redis_server.client()
    assert readyz(a)[1]["checks"]["registry"] == "ok"

    async def on_a() -> str:
        callers, tasks = await start_calls(a, key, agent_id, 1)
        call_id = callers[0].call_id
        assert call_id is not None, callers[0].refused
        wait_for(lambda: r.get(f"parley:reg:call:{call_id}") == "reg-a", 5, "the call registered under reg-a")
        assert 0 < r.pttl(f"parley:reg:call:{call_id}") <= TTL_S * 1000
        assert set(r.zrange("parley:reg:set:workers", 0, -1)) == {"reg-a", "reg-b"}
        os.kill(a.pid, signal.SIGKILL)
        await asyncio.gather(*tasks, return_exceptions=True)  # the socket dies with the worker
        return call_id

    call_id = asyncio.run(on_a())
    killed_at = time.monotonic()
    assert _call(b, key, call_id)["status"] == "active"
    ended = wait_for(
        lambda: (c := _call(b, key, call_id))["status"] != "active" and c, TTL_S + 15, "the lost call to be ended"
    )
    assert ended["end_reason"] == "worker-lost", ended
    assert time.monotonic() - killed_at >= TTL_S - 1.0  # not before the heartbeat expired
    assert r.zrange("parley:reg:set:workers", 0, -1) == ["reg-b"]
    wait_for(lambda: r.get(f"parley:reg:call:{call_id}") is None, 3, "the lost call's key to expire")


def test_redis_down_and_back(workers: list[Service], key: str, redis_server: RedisServer, talker_id: str) -> None:
    b = workers[1]
    agent_id = talker_id

    async def scenario() -> str:
        callers, tasks = await start_calls(b, key, agent_id, 1)
        live = callers[0]
        assert live.call_id is not None, live.refused
        await asyncio.sleep(1)
        redis_server.stop()
        down = await asyncio.to_thread(
            wait_for, lambda: "registry" in (s := readyz(b)[1])["not_ready"] and s, 10, "readiness: registry down"
        )
        assert {"redis", "registry"} <= set(down["not_ready"]), down
        refused, _ = await start_calls(b, key, agent_id, 1)
        assert refused[0].refused is not None and refused[0].refused[0] == 1013, refused[0]
        assert "registry (Redis) cannot be reached" in refused[0].refused[1]
        frames = live.frames
        await asyncio.sleep(2)
        assert live.frames > frames + 50 and live.closed is None and live.end_reason is None  # it goes on
        redis_server.start()
        await asyncio.to_thread(wait_for, lambda: readyz(b)[0] == 200, 10, "readiness back")
        assert redis_server.client().get(f"parley:reg:call:{live.call_id}") == "reg-b"  # registered again
        # the rate limiter's Redis pool fails its first request after the restart (a stale connection): let it
        await asyncio.to_thread(wait_for, lambda: _listed(b, key), 10, "the API through Redis again")
        again, again_tasks = await start_calls(b, key, agent_id, 1)
        assert again[0].call_id is not None, again[0].refused
        await hang_up([live, *again], [tasks[0], *again_tasks])
        assert live.end_reason == "caller-hangup" and live.max_gap_s < 0.5, live
        return str(live.call_id)

    call_id = asyncio.run(scenario())
    record = _call(b, key, call_id)
    assert record["status"] == "ended" and record["end_reason"] == "caller-hangup", record

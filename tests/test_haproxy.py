"""deploy/haproxy/haproxy.cfg, run by real HAProxy in front of two real `parley serve` workers on one PostgreSQL.

The shipped file is used as it is, with only its marked addresses and paths replaced (servers, binds, the
certificate, the stats socket): the API over HTTPS with the security headers, /metrics closed, talk calls over
the WebSocket upgrade spread over both workers (leastconn), and the /readyz health check at work: a worker told
to stop (SIGTERM) turns unready, HAProxy sends new calls to the other one only, and the call the draining worker
holds goes on until the drain deadline and ends cleanly as worker-drain (not cut).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from .support.live_call import talker
from .support.service import ROOT, Service, backend_env, free_port, running_service
from .support.worker_calls import wait_for
from .test_nginx import HEADERS, make_certificate, render

CONF = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SILENCE = bytes(640)
DRAIN_S = 8


@dataclass
class Proxy:
    url: str
    http_url: str
    out: Path
    stats: Path
    context: ssl.SSLContext
    workers: dict[str, Service] = field(default_factory=dict)  # HAProxy's server name -> the worker
    stacks: dict[str, ExitStack] = field(default_factory=dict)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, verify=self.context, headers=headers, timeout=30)

    def servers(self, path: str) -> list[str]:
        """The server that served each logged request for ``path`` (a WebSocket is logged when it closes)."""
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [m.group(1) for line in lines if f' {path}"' in line and (m := re.search(r" server=(\S+)", line))]

    def state(self, backend: str) -> dict[str, int]:
        """Each server's operational state from the stats socket (0 stopped, 2 running)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.stats))
            s.sendall(f"show servers state {backend}\n".encode())
            text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
        rows = [line.split() for line in text.splitlines()[2:] if line.strip()]
        return {row[3]: int(row[5]) for row in rows if len(row) > 5}


def start_haproxy(root: Path, workers: list[str], stack: ExitStack) -> tuple[str, str, Path, Path, Path]:
    crt, pem = make_certificate(root)
    bundle = root / "parley.pem"
    bundle.write_text(crt.read_text() + pem.read_text())
    bundle.chmod(0o600)
    https, http = free_port(), free_port()
    stats = root / "admin.sock"
    conf = render(CONF.read_text(), {
        "server parley-1 parley-1:8000": f"server parley-1 {workers[0]}",
        "server parley-2 parley-2:8000": f"server parley-2 {workers[1]}",
        "bind :443 ssl": f"bind 127.0.0.1:{https} ssl",
        "bind :80 ": f"bind 127.0.0.1:{http} ",
        "/etc/haproxy/tls/parley.pem": str(bundle),
        "/run/haproxy/admin.sock": str(stats),
    })  # fmt: skip
    cfg = root / "haproxy.cfg"
    cfg.write_text(conf)
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    out_path = root / "haproxy.out"
    out = out_path.open("w")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    stack.callback(_stop, proc)
    wait_for(lambda: _listening(https) or proc.poll() is not None, 15, "haproxy to listen")
    assert proc.poll() is None, out_path.read_text()
    return f"https://127.0.0.1:{https}", f"http://127.0.0.1:{http}", out_path, stats, crt


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is missing: scripts/install-test-deps.sh installs it (Debian package haproxy)")
    with ExitStack() as stack:
        env = stack.enter_context(backend_env("postgres", request))
        shared = {**env, "PARLEY_TOKEN_SECRET": secrets.token_urlsafe(32), "PARLEY_TRUSTED_PROXIES": "127.0.0.1",
                  "PARLEY_DRAIN_SECS": str(DRAIN_S)}  # fmt: skip
        subprocess.run([sys.executable, "-m", "parley.cli", "db", "upgrade"], env={**os.environ, **env}, cwd=ROOT,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        names = ("parley-1", "parley-2")
        starting = {n: running_service(tmp_path_factory.mktemp(n), **shared, PARLEY_WORKER_ID=n) for n in names}
        with ThreadPoolExecutor(len(names)) as pool:
            entered = {n: pool.submit(cm.__enter__) for n, cm in starting.items()}
        workers, stacks = {}, {}
        for name, future in entered.items():
            stacks[name] = stack.enter_context(ExitStack())
            if future.exception() is None:
                stacks[name].push(starting[name].__exit__)
        for name, future in entered.items():
            workers[name] = future.result()
        addresses = [workers[n].url.removeprefix("http://") for n in names]
        url, http_url, out, stats, crt = start_haproxy(tmp_path_factory.mktemp("haproxy"), addresses, stack)
        proxy = Proxy(url, http_url, out, stats, ssl.create_default_context(cafile=str(crt)), workers, stacks)
        wait_for(lambda: set(proxy.state("parley_calls").values()) == {2}, 30, "both workers healthy")
        yield proxy


@pytest.fixture(scope="module")
def key(proxy: Proxy) -> str:
    return proxy.workers["parley-1"].create_key("haproxy-tenant")


@pytest.fixture(scope="module")
def agent(proxy: Proxy, key: str) -> dict[str, Any]:
    with proxy.client(key) as c:
        response = c.post("/v1/agents", json={**talker(60), "name": "behind-haproxy"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_https_api_security_headers_and_closed_metrics(proxy: Proxy, key: str, agent: dict[str, Any]) -> None:
    with proxy.client(key) as c:
        health = c.get("/health")
        got = c.get(f"/v1/agents/{agent['id']}")
        blocked = c.get("/metrics")
    assert health.status_code == 200 and got.status_code == 200 and got.json()["name"] == "behind-haproxy"
    assert blocked.status_code == 404
    for response in (health, got, blocked):
        for name in HEADERS:
            assert len(response.headers.get_list(name)) == 1, (name, response.headers)
    assert "default-src 'none'" in got.headers["content-security-policy"]  # Parley's own, not replaced
    plain = httpx.get(f"{proxy.http_url}/v1/agents?x=1", follow_redirects=False)
    assert plain.status_code == 301 and plain.headers["location"].startswith("https://")


@dataclass
class Talk:
    events: list[dict[str, Any]] = field(default_factory=list)
    refused: tuple[int, str] | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)


async def talk(proxy: Proxy, key: str, agent_id: str, hold: asyncio.Event) -> Talk:
    """A talk call through HAProxy (wss): silence at real time until ``hold`` is set, then ``end``."""
    token = await asyncio.to_thread(lambda: proxy.client(key).post(f"/v1/agents/{agent_id}/talk-token").json())
    call = Talk()
    url = proxy.url.replace("https", "wss") + token["url"]
    async with websockets.connect(url, ssl=proxy.context, max_size=2**20, ping_interval=None) as ws:
        try:
            call.events.append(json.loads(await ws.recv()))
        except websockets.ConnectionClosed as exc:
            call.refused = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            call.started.set()
            return call
        call.started.set()

        async def send() -> None:
            started, k = time.monotonic(), 0
            while not hold.is_set():
                await ws.send(SILENCE)
                k += 1
                await asyncio.sleep(max(0.0, started + k * 0.02 - time.monotonic()))
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                if isinstance(message, str):
                    call.events.append(json.loads(message))
                    if call.events[-1]["type"] == "end":
                        break
        finally:
            sender.cancel()
    return call


def test_talk_calls_upgrade_and_spread_over_both_workers(proxy: Proxy, key: str, agent: dict[str, Any]) -> None:
    async def two_calls() -> list[Talk]:
        hold = asyncio.Event()
        first = asyncio.create_task(talk(proxy, key, agent["id"], hold))
        second = asyncio.create_task(talk(proxy, key, agent["id"], hold))
        await asyncio.gather(*(asyncio.sleep(1.5),))
        hold.set()
        return [await first, await second]

    calls = asyncio.run(two_calls())
    for call in calls:
        assert call.events[0]["type"] == "call" and call.events[-1]["type"] == "end", call.events[-1:]
    path = f"/v1/agents/{agent['id']}/talk"
    wait_for(lambda: len(proxy.servers(path)) >= 2, 15, "the sockets logged")
    assert sorted(proxy.servers(path)[-2:]) == ["parley-1", "parley-2"], proxy.servers(path)


def test_draining_worker_is_taken_out_and_keeps_its_call(proxy: Proxy, key: str, agent: dict[str, Any]) -> None:
    async def scenario() -> tuple[Talk, list[Talk], str]:
        hold, later = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(talk(proxy, key, agent["id"], hold))
        await asyncio.sleep(1.0)
        busy = [n for n, w in proxy.workers.items() if _in_use(w) == 1]
        assert len(busy) == 1, busy
        (name,) = busy
        stopping = threading.Thread(target=proxy.stacks[name].close)  # SIGTERM; returns once the process exits
        stopping.start()
        await asyncio.to_thread(wait_for, lambda: proxy.state("parley_calls").get(name) == 0, 20, "marked down")
        others = [asyncio.create_task(talk(proxy, key, agent["id"], later)) for _ in range(3)]
        await asyncio.sleep(1.0)
        later.set()
        rest = list(await asyncio.gather(*others))
        ended = await asyncio.wait_for(first, DRAIN_S + 30)
        hold.set()
        await asyncio.to_thread(stopping.join, 30)
        return ended, rest, name

    first, rest, stopped = asyncio.run(scenario())
    assert first.events[-1] == {**first.events[-1], "type": "end", "reason": "worker-drain"}, first.events[-1]
    for call in rest:
        assert call.refused is None and call.events[-1]["type"] == "end", (call.refused, call.events[-1:])
    path = f"/v1/agents/{agent['id']}/talk"
    wait_for(lambda: len(proxy.servers(path)) >= 6, 15, "the sockets logged")
    after = proxy.servers(path)[-4:]  # the three new calls and the drained one, in the order they closed
    assert after.count(stopped) == 1 and len(set(after)) == 2, (stopped, after)


def _in_use(worker: Service) -> int:
    r = httpx.get(f"{worker.url}/readyz", timeout=5)
    calls: dict[str, Any] = r.json()["calls"]
    return int(calls["in_use"])

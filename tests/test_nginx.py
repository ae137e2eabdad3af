"""deploy/nginx/parley.conf, run by real nginx in front of two real `parley serve` workers on one PostgreSQL.

The shipped file is used as it is, with only its marked addresses and paths replaced (upstream servers, listen
ports, certificate, access log): TLS with a certificate made here, the API over HTTPS, security headers on
Parley's responses and on nginx's own, talk calls over the WebSocket upgrade spread over both workers
(least_conn), ``limit_req`` answering 429, and the API still answering after the worker it was hashed onto is
stopped mid-test. The workers share a database and a token secret, as a multi-worker deployment does; the agent
is model-free (energy VAD, canned STT and LLM, tone TTS), so the module takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .support.live_call import talker
from .support.service import ROOT, Service, backend_env, free_port, running_service

CONF = ROOT / "deploy" / "nginx" / "parley.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HEADERS = ("strict-transport-security", "x-content-type-options", "x-frame-options", "content-security-policy")
SILENCE = bytes(640)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (P-256), as an operator's test set-up would make."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parley-test")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1)).add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    crt, pem = folder / "tls.crt", folder / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pem.chmod(0o600)
    return crt, pem


def render(conf: str, replacements: dict[str, str]) -> str:
    """The shipped file with each marked string replaced; a marker the file no longer has fails the test."""
    for old, new in replacements.items():
        assert old in conf, f"deploy/nginx/parley.conf no longer has {old!r}: update tests/test_nginx.py"
        conf = conf.replace(old, new)
    return conf


@dataclass
class Proxy:
    url: str
    http_url: str
    access_log: Path
    error_log: Path
    context: ssl.SSLContext
    workers: dict[str, Service] = field(default_factory=dict)  # "127.0.0.1:port" -> the worker there
    stacks: dict[str, ExitStack] = field(default_factory=dict)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, verify=self.context, headers=headers, timeout=30)

    def log_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []


def start_nginx(root: Path, workers: list[str], stack: ExitStack) -> tuple[str, str, Path, Path, Path]:
    """nginx in its own prefix on free ports with the shipped config; stopped (SIGQUIT, graceful) at the end."""
    for sub in ("logs", "temp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    crt, pem = make_certificate(root)
    https, http = free_port(), free_port()
    conf = render(CONF.read_text(), {
        "server parley-1:8000": f"server {workers[0]}",
        "server parley-2:8000": f"server {workers[1]}",
        "listen 443 ssl;": f"listen 127.0.0.1:{https} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http};",
        "/etc/nginx/tls/tls.crt": str(crt),
        "/etc/nginx/tls/tls.key": str(pem),
        "/var/log/nginx/parley.access.log": str(root / "logs" / "access.log"),
        "root /var/www/acme;": f"root {root / 'acme'};",
    })  # fmt: skip
    (root / "parley.conf").write_text(conf)
    temp = root / "temp"
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root, workers would drop to nobody (no access to tmp)
    (root / "nginx.conf").write_text(
        f"{user}worker_processes 2;\npid {root / 'nginx.pid'};\nerror_log {root / 'logs' / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n  default_type application/octet-stream;\n  access_log off;\n"
        f"  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fcgi;\n"
        f"  uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;\n  include {root / 'parley.conf'};\n}}\n"
    )
    check = subprocess.run([NGINX, "-t", "-p", str(root), "-c", str(root / "nginx.conf")], capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    out = (root / "logs" / "nginx.out").open("w")
    proc = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"],
                            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    stack.callback(_stop, proc)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", https), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (root / "logs" / "error.log").read_text()
            time.sleep(0.05)
    return f"https://127.0.0.1:{https}", f"http://127.0.0.1:{http}", root / "logs" / "access.log", \
        root / "logs" / "error.log", crt  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(3)  # SIGQUIT: nginx's graceful shutdown
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    if not Path(NGINX).exists():
        pytest.fail("nginx is missing: scripts/install-test-deps.sh installs it (Debian package nginx)")
    with ExitStack() as stack:
        env = stack.enter_context(backend_env("postgres", request))
        shared = {**env, "PARLEY_TOKEN_SECRET": secrets.token_urlsafe(32), "PARLEY_TRUSTED_PROXIES": "127.0.0.1",
                  "PARLEY_DRAIN_SECS": "2"}  # fmt: skip
        # the schema first: two workers starting at once on an empty database would both create it
        subprocess.run([sys.executable, "-m", "parley.cli", "db", "upgrade"], env={**os.environ, **env}, cwd=ROOT,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        workers, stacks = {}, {}
        names = ("nginx-w1", "nginx-w2")
        starting = {n: running_service(tmp_path_factory.mktemp(n), **shared, PARLEY_WORKER_ID=n) for n in names}
        with ThreadPoolExecutor(len(names)) as pool:  # both at once: a start takes tens of seconds on a busy host
            entered = {n: pool.submit(cm.__enter__) for n, cm in starting.items()}
        for name, future in entered.items():
            stacks[name] = stack.enter_context(ExitStack())
            if future.exception() is None:
                stacks[name].push(starting[name].__exit__)
        for future in entered.values():
            svc = future.result()  # the first failed start raises here, after every started one is registered
            workers[svc.url.removeprefix("http://")] = svc
        url, http_url, log, errors, crt = start_nginx(tmp_path_factory.mktemp("nginx"), list(workers), stack)
        context = ssl.create_default_context(cafile=str(crt))
        by_address = {addr: stacks[svc.env["PARLEY_WORKER_ID"]] for addr, svc in workers.items()}
        yield Proxy(url, http_url, log, errors, context, workers, by_address)


@pytest.fixture(scope="module")
def key(proxy: Proxy) -> str:
    return next(iter(proxy.workers.values())).create_key("nginx-tenant")


@pytest.fixture(scope="module")
def agent(proxy: Proxy, key: str) -> dict[str, Any]:
    with proxy.client(key) as c:
        response = c.post("/v1/agents", json={**talker(1), "name": "behind-nginx", "greeting": "Hi."})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def upstreams(lines: list[str], path: str) -> list[str]:
    """The ``upstream=`` field (the workers tried, in order) of each access-log line for ``path``."""
    found = []
    for line in lines:
        if f' {path}"' in line and (m := re.search(r"upstream=(.*?) upstream_status=", line)):
            found.append(m.group(1))
    return found


def test_https_api_and_security_headers(proxy: Proxy, key: str, agent: dict[str, Any]) -> None:
    with proxy.client(key) as c:
        health = c.get("/health")
        got = c.get(f"/v1/agents/{agent['id']}")
        blocked = c.get("/metrics")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert got.status_code == 200 and got.json()["name"] == "behind-nginx"
    assert blocked.status_code == 404  # Prometheus scrapes the workers directly
    for response in (health, got, blocked):
        for name in HEADERS:
            assert len(response.headers.get_list(name)) == 1, (name, response.headers)
    assert response.headers["x-content-type-options"] == "nosniff"
    # Parley believed nginx's X-Forwarded-Proto (PARLEY_TRUSTED_PROXIES): its own per-path CSP came through
    assert "default-src 'none'" in got.headers["content-security-policy"]
    assert got.headers["cache-control"] == "no-store"
    assert "server" not in health.headers or "nginx/" not in health.headers["server"]  # server_tokens off
    plain = httpx.get(f"{proxy.http_url}/v1/agents?x=1", follow_redirects=False)
    assert plain.status_code == 301 and plain.headers["location"].startswith("https://")


async def talk(proxy: Proxy, key: str, agent_id: str, hold: asyncio.Event | None = None) -> list[dict[str, Any]]:
    """A talk call through nginx (wss): silence at real time until ``hold`` is set (or 0.6 s), then ``end``."""
    with proxy.client(key) as c:
        token = c.post(f"/v1/agents/{agent_id}/talk-token").json()
    events: list[dict[str, Any]] = []
    url = proxy.url.replace("https", "wss") + token["url"]
    async with websockets.connect(url, ssl=proxy.context, max_size=2**20) as ws:

        async def send() -> None:
            started, k = time.monotonic(), 0
            while (hold is not None and not hold.is_set()) or (hold is None and k < 30):
                await ws.send(SILENCE)
                k += 1
                await asyncio.sleep(max(0.0, started + k * 0.02 - time.monotonic()))
            await ws.send(json.dumps({"type": "end"}))

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, str):
                    events.append(json.loads(message))
                    if events[-1]["type"] == "end":
                        return

        sender = asyncio.create_task(send())
        try:
            await asyncio.wait_for(receive(), 60)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return events


def test_talk_calls_upgrade_and_spread_over_both_workers(proxy: Proxy, key: str, agent: dict[str, Any]) -> None:
    async def two_calls() -> list[list[dict[str, Any]]]:
        hold = asyncio.Event()
        first = asyncio.create_task(talk(proxy, key, agent["id"], hold))
        await asyncio.sleep(1.0)  # the first call's socket is open: least_conn sends the second elsewhere
        second = await talk(proxy, key, agent["id"])
        hold.set()
        return [await first, second]

    calls = asyncio.run(two_calls())
    for events in calls:
        types = [e["type"] for e in events]
        assert types[0] == "call" and types[-1] == "end", types
    with proxy.client(key) as c:
        for events in calls:
            record = c.get(f"/v1/calls/{events[0]['call_id']}")
            assert record.status_code == 200 and record.json()["transport"] == "talk", record.text
            assert record.json()["status"] == "ended" and record.json()["caller"] == "127.0.0.1"
    talked = upstreams(proxy.log_lines(), f"/v1/agents/{agent['id']}/talk")
    assert sorted(talked) == sorted(proxy.workers), talked  # one call on each worker


def test_worker_stopped_mid_test_requests_still_succeed(proxy: Proxy, key: str, agent: dict[str, Any]) -> None:
    with proxy.client(key) as c:
        for _ in range(3):
            assert c.get(f"/v1/agents/{agent['id']}").status_code == 200
        served = upstreams(proxy.log_lines(), f"/v1/agents/{agent['id']}")
        assert len(set(served[-3:])) == 1, served  # the hash keeps one client on one worker
        hashed = served[-1]
        proxy.stacks[hashed].close()  # SIGTERM: the worker drains (no calls) and exits
        before = len(proxy.log_lines())
        answers = [c.get(f"/v1/agents/{agent['id']}").status_code for _ in range(10)]
        created = c.post("/v1/agents", json={**talker(1), "name": "after-failover", "greeting": "Hi."})
    assert answers == [200] * 10 and created.status_code == 201, (answers, created.text)
    after = upstreams(proxy.log_lines()[before:], f"/v1/agents/{agent['id']}")
    (other,) = set(proxy.workers) - {hashed}
    assert after[0] in (f"{hashed}, {other}", other) and set(after[1:]) == {other}, after
    events = asyncio.run(talk(proxy, key, agent["id"]))
    assert events[0]["type"] == "call" and events[-1]["type"] == "end"


def test_limit_req_answers_429(proxy: Proxy, key: str) -> None:
    with proxy.client(key) as c:
        answers = [c.get("/health") for _ in range(120)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and {r.status_code for r in answers} <= {200, 429}, {r.status_code for r in answers}
    sample = limited[0]
    assert sample.headers["retry-after"] == "1" and sample.json() == {"detail": "too many requests"}
    for name in HEADERS[:3]:
        assert len(sample.headers.get_list(name)) == 1, (name, sample.headers)
    time.sleep(2.5)  # the zone refills (20 a second)
    with proxy.client(key) as c:
        assert c.get("/health").status_code == 200

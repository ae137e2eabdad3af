"""Failures are cheap, quiet about secrets, and 4xx where the client is at fault (issue 8, findings 2, 3 and 14).

A real `parley serve` (tests/support/failing_routes.py adds routes that raise on purpose, standing for any bug): a 500
carries the security headers, is logged once, bounded, without locals and with every credential masked, and does
not hold up a concurrent request or a live call; the inputs that used to raise (a date in ``since``, a huge Range,
a lone surrogate or a NUL) are 4xx. tests/conftest.py greps the whole run's logs for every secret; the pure parts
are tested in tests/test_redact.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from .support.failing_routes import LOCAL_MARKER
from .support.live_call import live_call, talker
from .support.service import ROOT, Service, backend_env, free_port, running_service

JWT_SECRET = "jwt-" + secrets.token_urlsafe(24)
TWILIO_TOKEN = "tw-" + secrets.token_hex(16)
CHEAP_AGENT = {
    "name": "Cheap",
    "system_prompt": "Answer.",
    "greeting": "Hi.",
    "vad": {"provider": "energy"},
    "stt": {"provider": "canned", "options": {"text": "hello"}},
    "llm": {"provider": "canned", "options": {"default": "Yes."}},
    "tts": {"provider": "tone", "fallback": None},
}
JSON_TYPE = {"Content-Type": "application/json"}
SECURITY_HEADERS = ("x-content-type-options", "x-frame-options", "content-security-policy", "referrer-policy")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "PARLEY_RATE_LIMIT_PER_KEY": "100000/minute",
        "PARLEY_RATE_LIMIT_PER_ADDRESS": "100000/minute",
        "PARLEY_JWT_SECRET": JWT_SECRET,
        "PARLEY_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "PARLEY_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    }
    with running_service(tmp_path_factory.mktemp("errors"), module="tests.support.failing_routes", **env) as svc:
        yield svc


@pytest.fixture(scope="module")
def admin(service: Service) -> str:
    return service.create_key(f"errors-{secrets.token_hex(3)}")


def log_end(service: Service) -> int:
    """The log's length once earlier records have been written (a thread writes them, a moment after the fact)."""
    size = -1
    while (now := service.log.stat().st_size) != size:
        size = now
        time.sleep(0.3)
    return len(service.log.read_text(errors="replace"))


def wait_for_log(service: Service, needle: str, after: int, timeout_s: float = 10.0) -> str:
    """The log written since offset ``after`` once it holds ``needle`` (a thread writes it, a moment later)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = service.log.read_text(errors="replace")[after:]
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


# --- finding 2: the inputs that raised are 4xx ---------------------------------------------------------------


def test_a_date_or_a_time_without_zone_in_since_means_utc(service: Service, admin: str) -> None:
    viewer = service.create_key(f"viewers-{secrets.token_hex(3)}", role="viewer")
    with service.client(viewer) as c:
        for value in ("2024-01-01", "2024-01-01T00:00:00", "2024-01-01T05:30:00+05:30"):
            r = c.get("/v1/calls", params={"since": value, "until": value})
            assert r.status_code == 200, (value, r.status_code, r.text)
        r = c.get("/v1/calls", params={"since": "9999-12-31T23:59:59-23:59"})  # year 10000 in UTC
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"], r.text
        assert c.get("/v1/calls", params={"until": "yesterday"}).status_code == 422


def talk_call(service: Service, key: str, agent_id: str) -> str:
    """A short talk call (cheap agent): its id; it leaves a recording."""

    async def run() -> str:
        url = service.url.replace("http", "ws", 1) + f"/v1/agents/{agent_id}/talk"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            call_id = ""
            for _ in range(50):
                await ws.send(bytes(640))
                await asyncio.sleep(0.02)
            await ws.send(json.dumps({"type": "end"}))
            async for message in ws:
                if isinstance(message, str):
                    event = json.loads(message)
                    call_id = event.get("call_id", call_id)
                    if event["type"] == "end":
                        return call_id
        return call_id

    return asyncio.run(asyncio.wait_for(run(), 60))


def test_a_range_of_thousands_of_digits_is_416_or_clamped_not_500(service: Service, admin: str) -> None:
    with service.client(admin) as c:
        agent = c.post("/v1/agents", json={**CHEAP_AGENT, "name": f"ranges-{secrets.token_hex(3)}"}).json()
    call_id = talk_call(service, admin, agent["id"])
    with service.client(admin) as c:
        for _ in range(50):  # the recording is finished a moment after the call
            whole = c.get(f"/v1/calls/{call_id}/recording")
            if whole.status_code == 200:
                break
            time.sleep(0.2)
        assert whole.status_code == 200, whole.text
        size = len(whole.content)
        huge = "9" * 4400
        r = c.get(f"/v1/calls/{call_id}/recording", headers={"Range": f"bytes={huge}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
        r = c.get(f"/v1/calls/{call_id}/recording", headers={"Range": f"bytes=10-{huge}"})
        assert r.status_code == 206 and r.content == whole.content[10:], r.status_code
        r = c.get(f"/v1/calls/{call_id}/recording", headers={"Range": f"bytes=-{huge}"})
        assert r.status_code == 206 and r.content == whole.content
        for odd in (b"bytes=\xb2-", b"bytes=0-1,5-9", b"bytes=-"):  # a superscript two; several ranges; none
            assert c.get(f"/v1/calls/{call_id}/recording", headers={b"Range": odd}).status_code == 416


LONE = [
    b'"\\ud800"',  # a high half alone
    b'"\\uDC00 x"',  # a low half alone
    b'"\\ud83d\\u0041"',  # a high half followed by something else
    b'"\\\\\\ud800"',  # an escaped backslash, then a real lone escape
    b'"\xed\xa0\x80"',  # the surrogate itself, encoded as UTF-8 bytes (json.loads would pass it through)
]


@pytest.mark.parametrize("name", LONE, ids=["high", "low", "unpaired", "after-backslash", "raw-bytes"])
@pytest.mark.parametrize("route", ["POST /v1/agents", "PUT /v1/agents/x", "POST /v1/keys", "POST /v1/numbers"])
def test_a_lone_surrogate_in_any_json_body_is_422(service: Service, admin: str, route: str, name: bytes) -> None:
    method, path = route.split()
    doc = json.dumps({**CHEAP_AGENT, "name": "NAME", "number": "NAME", "role": "viewer"}).encode()
    body = doc.replace(b'"NAME"', name)
    with service.client(admin) as c:
        r = c.request(method, path, content=body, headers=JSON_TYPE)
        assert r.status_code == 422, (r.status_code, r.text)
        assert r.json()["detail"][0]["type"] == "json_invalid"
        for header in SECURITY_HEADERS:
            assert header in r.headers
        r = c.request(method, path, content=body)  # FastAPI reads a body without a content type as JSON too
        assert r.status_code == 422, (r.status_code, r.text)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-2.5E+400"])
def test_numbers_json_has_not_are_422(service: Service, admin: str, number: str) -> None:
    """Python's json reads NaN/Infinity (not JSON) and 1e999 (as inf): each was a 500, or stored where PostgreSQL
    would refuse it."""
    for where in ('"turn": {"end_of_turn_secs": N}', '"llm": {"provider": "canned", "options": {"x": N}}'):
        doc = json.dumps({**CHEAP_AGENT, "name": f"numbers-{secrets.token_hex(3)}"})[:-1]
        body = doc + ", " + where.replace("N", number) + "}"
        with service.client(admin) as c:
            r = c.post("/v1/agents", content=body, headers=JSON_TYPE)
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid", (where, r.text)


def test_escaped_backslashes_and_real_pairs_are_fine(service: Service, admin: str) -> None:
    doc = json.dumps({**CHEAP_AGENT, "name": "NAME"}).encode()
    with service.client(admin) as c:
        for name in (b"pair \\ud83d\\ude00", b"text \\\\ud800", "raw \U0001f600".encode()):
            unique = b'"' + name + f" {secrets.token_hex(3)}".encode() + b'"'
            r = c.post(
                "/v1/agents", content=doc.replace(b'"NAME"', unique), headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 201, (name, r.text)
            assert json.loads(unique) == r.json()["name"]


@pytest.fixture(scope="module")
def pg_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """On PostgreSQL, which refuses NUL in text and JSON: a NUL that reaches a query is a 500 there."""
    with backend_env("postgres", request) as env, running_service(tmp_path_factory.mktemp("pg-errors"), **env) as svc:
        yield svc


NUL_URLS = [
    "GET /v1/agents/%00x",
    "GET /v1/calls?q=%00",
    "GET /v1/calls?status=a%00",
    "DELETE /v1/agents/%00",
    "POST /v1/agents/%00/talk-token",
    "DELETE /v1/numbers/%00",
]
NUL_BODIES = [
    ("/v1/keys", {"name": "k\u0000", "role": "viewer"}),
    ("/v1/numbers", {"number": "+1555\u0000", "agent_id": "Cheap"}),
    ("/v1/agents", {**CHEAP_AGENT, "name": "nul\u0000"}),
]


def test_a_nul_anywhere_in_the_url_or_a_json_body_is_4xx(pg_service: Service) -> None:
    key = pg_service.create_key(f"nuls-{secrets.token_hex(3)}")
    with pg_service.client(key) as c:
        assert c.post("/v1/agents", json=CHEAP_AGENT).status_code == 201
        for route in NUL_URLS:
            method, path = route.split()
            r = c.request(method, path)
            assert r.status_code == 400 and "NUL" in r.json()["detail"], (route, r.status_code, r.text)
        for path, body in NUL_BODIES:
            r = c.post(path, json=body)
            assert r.status_code == 422, (path, r.status_code, r.text)
        text = json.dumps({"name": "a \\u0000 is only text here", "role": "viewer"})  # an escaped backslash
        assert c.post("/v1/keys", content=text, headers=JSON_TYPE).status_code == 201

    async def talk() -> None:
        url = pg_service.url.replace("http", "ws", 1) + "/v1/agents/%00/talk"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            await asyncio.wait_for(ws.recv(), 10)

    with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed)):
        asyncio.run(talk())
    assert "unhandled_error" not in pg_service.log.read_text(errors="replace")


# --- finding 14: a 500 has every security header; finding 2: it is cheap ------------------------------------------


def test_a_500_carries_the_security_headers(service: Service, admin: str) -> None:
    with service.client(admin) as c:
        r = c.get("/__test__/fail")
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        for header in SECURITY_HEADERS:
            assert header in r.headers, (header, dict(r.headers))
        assert c.get("/health").status_code == 200  # the connection (or a new one) still serves


def test_a_500_is_logged_once_bounded_redacted_and_without_locals(service: Service, admin: str) -> None:
    token = "tok-" + secrets.token_urlsafe(20)
    before = log_end(service)
    with service.client(admin) as c:
        assert c.get("/__test__/fail", params={"depth": 200, "token": token}).status_code == 500
    text = wait_for_log(service, "unhandled_error", before)
    assert text.count("unhandled_error") == 1 and "Exception in ASGI application" not in text, text[:3000]
    assert "RuntimeError: failing on purpose" in text, text[-3000:]
    leaked = admin in text or token in text  # not in the assertion: pytest would print the secrets
    assert not leaked and "authorization=[REDACTED] token=[REDACTED]" in text, text[-1000:].replace(admin, "KEY")
    assert LOCAL_MARKER not in text, "a frame's locals were logged"
    assert len(text) < 12_000, f"{len(text)} characters for one failure"


def test_a_failure_after_the_response_started_is_logged_once(service: Service, admin: str) -> None:
    before = log_end(service)
    with service.client(admin) as c, pytest.raises(httpx.HTTPError):
        c.get("/__test__/fail-midway").read()
    text = wait_for_log(service, "unhandled_error", before)
    leaked = admin in text
    assert text.count("RuntimeError: failing on purpose") == 1 and not leaked, text[:3000].replace(admin, "KEY")


def test_a_websocket_failure_is_logged_by_the_server_redacted_and_bounded(service: Service, admin: str) -> None:
    before = log_end(service)

    async def run() -> None:
        url = service.url.replace("http", "ws", 1) + "/__test__/fail-ws?token=" + admin
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)

    asyncio.run(run())
    text = wait_for_log(service, "RuntimeError: failing on purpose", before)
    leaked = admin in text
    assert "RuntimeError: failing on purpose" in text and not leaked, text[:3000].replace(admin, "KEY")
    assert LOCAL_MARKER not in text and len(text) < 12_000


async def _latencies(url: str, seconds: float, during: asyncio.Event | None = None) -> list[float]:
    """/health every 10 ms for ``seconds``: each request's latency."""
    out: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            assert (await c.get("/health")).status_code == 200
            out.append(time.monotonic() - t)
            await asyncio.sleep(0.01)
    return out


def test_a_failing_request_does_not_delay_a_concurrent_one(service: Service, admin: str) -> None:
    async def failures(n: int) -> None:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as c:
            for _ in range(n):
                r = await c.get("/__test__/fail", params={"depth": 300}, headers={"Authorization": f"Bearer {admin}"})
                assert r.status_code == 500
                await asyncio.sleep(0.05)

    async def run() -> tuple[list[float], list[float]]:
        quiet = await _latencies(service.url, 1.5)
        busy, _ = await asyncio.gather(_latencies(service.url, 3.0), failures(10))
        return quiet, busy

    quiet, busy = asyncio.run(run())
    worst = max(busy)
    assert worst < max(quiet) + 0.1, (
        f"a concurrent request waited {worst * 1000:.0f} ms while others failed "
        f"(quiet: median {statistics.median(quiet) * 1000:.1f} ms, worst {max(quiet) * 1000:.0f} ms)"
    )


def test_failing_requests_do_not_stall_a_live_call(service: Service, admin: str) -> None:
    """The audio of a call in progress keeps its pace while requests beside it fail (tests/support/live_call.py)."""
    with service.client(admin) as c:
        agent = c.post("/v1/agents", json={**talker(60), "name": f"live-{secrets.token_hex(3)}"}).json()
    with live_call(service, admin, agent["id"]) as call, service.client(admin) as c:
        started = time.time()
        for _ in range(20):
            assert c.get("/__test__/fail", params={"depth": 300}).status_code == 500
            time.sleep(0.05)
        ended = time.time()
    print(call.summary())
    assert call.report is not None and not call.report.ended, call.summary()
    stalls = [gap for at, gap in call.report.gaps if started <= at <= ended + 1 and gap > 0.25]
    assert not stalls, call.summary()


def test_json_log_lines(tmp_path: Path) -> None:
    env = {"PARLEY_LOG_FORMAT": "json", "PARLEY_JWT_SECRET": JWT_SECRET}
    with running_service(tmp_path / "json", module="tests.support.failing_routes", **env) as svc:
        key = svc.create_key("json-logs")
        with svc.client(key) as c:
            assert c.get("/__test__/fail", params={"depth": 30}).status_code == 500
        text = wait_for_log(svc, "unhandled_error", 0)
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    failure = next(r for r in records if r["event"] == "unhandled_error")
    assert failure["level"] == "error" and failure["path"] == "/__test__/fail" and failure["method"] == "GET"
    assert failure["exception"].startswith("Traceback") and "RuntimeError" in failure["exception"]
    leaked = key in text
    assert not leaked and "timestamp" in failure


def test_an_app_served_by_plain_uvicorn_logs_the_same_way(tmp_path: Path) -> None:
    """``uvicorn --factory`` never runs `parley serve`'s set-up: create_app makes sure of it."""
    port = free_port()
    env = {**os.environ, "PARLEY_DATA_DIR": str(tmp_path), "PARLEY_SIP_PORT": "0"}
    app = "tests.support.failing_routes:create_app"
    command = [sys.executable, "-m", "uvicorn", app, "--factory", "--port", str(port)]
    with (tmp_path / "uvicorn.log").open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        token = "tok-" + secrets.token_urlsafe(20)
        r = httpx.get(f"{url}/__test__/fail", params={"depth": 200, "token": token}, timeout=30)
        assert r.status_code == 500 and "x-frame-options" in r.headers
        time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(15)
    text = (tmp_path / "uvicorn.log").read_text(errors="replace")
    leaked = token in text
    assert "unhandled_error" in text and not leaked and LOCAL_MARKER not in text and len(text) < 12_000, text[:2000]


def test_an_unknown_log_format_is_a_clear_error(tmp_path: Path) -> None:
    env = {"PARLEY_LOG_FORMAT": "xml", "PARLEY_DATA_DIR": str(tmp_path), "PARLEY_SIP_PORT": "0"}
    out = subprocess.run(
        [sys.executable, "-m", "parley.cli", "serve"], env={**os.environ, **env},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and "PARLEY_LOG_FORMAT" in out.stderr, out.stderr[-2000:]

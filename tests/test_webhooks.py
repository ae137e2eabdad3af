"""Webhooks against a real receiver (starlette on uvicorn, 127.0.0.1): signed deliveries, retries with backoff,
a receiver that is down and comes back, a worker restart and a crashed worker's lease, the SSRF guard at delivery,
and the events of a live call; on SQLite and PostgreSQL. Then the API of a real ``parley serve``: the secret shown
once, private URLs refused, tenants kept apart, and the service's own worker delivering (and resuming after a
restart on the same database). Backoffs are the ``PARLEY_WEBHOOK_*`` settings, made short here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from parley.calls import analysis
from parley.net.ssrf import OutboundPolicy
from parley.store.blobs.local import LocalBlobStore
from parley.store.db import Database
from parley.store.models import WebhookDelivery
from parley.webhooks.settings import WebhookSettings
from parley.webhooks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from parley.webhooks.store import WebhookRepo, claim, enqueue
from parley.webhooks.worker import WebhookWorker

from .support.keyed_call import Store, run_keyed_call
from .support.service import Service, register_secret, running_service
from .support.store import db, new_tenant  # noqa: F401 (the fixture)
from .support.tool_server import serve_app

CIPHER = MultiFernet([Fernet(Fernet.generate_key())])
FAST = WebhookSettings(backoff_base_s=0.05, backoff_max_s=0.2, poll_s=0.05, lease_s=5, timeout_s=2, max_attempts=50)
LOOPBACK = OutboundPolicy.parse("127.0.0.1")
EVENTS = ["call.started", "call.ended", "call.analyzed", "transcript.final"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Receiver:
    """What the receiver got; ``fail[path]`` 500s to answer first, ``code[path]`` a fixed answer."""

    port: int
    got: list[dict[str, Any]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    code: dict[str, int] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            path = request.url.path
            self.got.append({"path": path, "headers": dict(request.headers), "body": await request.body()})
            if path in self.hang:
                await asyncio.sleep(1)
            if self.fail.get(path, 0) > 0:
                self.fail[path] -= 1
                return JSONResponse({"error": "busy"}, status_code=500)
            return JSONResponse({}, status_code=self.code.get(path, 200))

        return Starlette(routes=[Route("/{name}", hook, methods=["POST"])])

    def serve(self) -> Iterator[None]:
        return serve_app(self.app(), self.port)

    def events(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.got if r["path"] == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver(free_port())
    for _ in rec.serve():
        yield rec


async def subscribe(db: Database, tenant: uuid.UUID, url: str) -> tuple[uuid.UUID, str]:  # noqa: F811
    async with db.session() as s:
        row, secret = await WebhookRepo(s, CIPHER).create(tenant, url, EVENTS, None)
    return row.id, secret


async def log_of(db: Database, webhook_id: uuid.UUID) -> list[WebhookDelivery]:  # noqa: F811
    async with db.session() as s:
        rows = await s.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
        return sorted(rows, key=lambda d: d.id)


async def settled(db: Database, webhook_id: uuid.UUID, timeout_s: float = 8) -> list[WebhookDelivery]:  # noqa: F811
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await log_of(db, webhook_id)
        if (rows and all(r.status != "pending" for r in rows)) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def emit(db: Database, tenant: uuid.UUID, call: uuid.UUID, kind: str, n: int = 0) -> None:  # noqa: F811
    async with db.session() as s:
        await enqueue(s, tenant, kind, {"n": n}, call, uuid.uuid4())


on_store_loop = pytest.mark.asyncio(loop_scope="module")  # the store fixture's loop


@on_store_loop
async def test_signed_and_retried_after_three_500s(db: Database, receiver: Receiver) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    hook, secret = await subscribe(db, tenant, receiver.url(f"/flaky-{tenant.hex}"))
    receiver.fail[f"/flaky-{tenant.hex}"] = 3
    call = uuid.uuid4()
    await emit(db, tenant, call, "call.started")
    worker = WebhookWorker(db, lambda: CIPHER, FAST, LOOPBACK).start()
    try:
        (row,) = await settled(db, hook)
    finally:
        await worker.stop()
    assert (row.status, row.attempts, row.response_code) == ("delivered", 4, 200)
    assert row.latency_ms is not None and row.error is None and row.finished_at is not None
    tries = [r for r in receiver.got if r["path"] == f"/flaky-{tenant.hex}"]
    assert len(tries) == 4 and len({r["body"] for r in tries}) == 1  # the same event each time
    h = tries[-1]["headers"]
    assert verify(secret, h[TIMESTAMP_HEADER.lower()], tries[-1]["body"], h[SIGNATURE_HEADER.lower()])
    assert not verify(secret + "x", h[TIMESTAMP_HEADER.lower()], tries[-1]["body"], h[SIGNATURE_HEADER.lower()])
    event = json.loads(tries[-1]["body"])
    assert set(event) == {"id", "type", "created_at", "call_id", "agent_id", "data"}
    assert (event["type"], event["call_id"], h[EVENT_ID_HEADER.lower()]) == ("call.started", str(call), event["id"])


@on_store_loop
async def test_3xx_and_4xx_give_up_while_408_429_and_timeouts_retry(db: Database, receiver: Receiver) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    codes = {"gone": 404, "moved": 302, "slow": 429, "hang": 200}
    hooks = {}
    for name, code in codes.items():
        receiver.code[f"/{name}-{tenant.hex}"] = code
        hooks[name], _ = await subscribe(db, tenant, receiver.url(f"/{name}-{tenant.hex}"))
    receiver.hang.add(f"/hang-{tenant.hex}")
    await emit(db, tenant, uuid.uuid4(), "call.ended")
    settings = FAST.model_copy(update={"max_attempts": 3, "timeout_s": 0.3})
    worker = WebhookWorker(db, lambda: CIPHER, settings, LOOPBACK)
    for _ in range(4):
        await worker.run_once()
        await asyncio.sleep(0.25)
    await worker.stop()
    rows = {name: (await log_of(db, hook))[0] for name, hook in hooks.items()}
    assert {n: (r.status, r.attempts, r.response_code) for n, r in rows.items()} == {
        "gone": ("failed", 1, 404),
        "moved": ("failed", 1, 302),  # redirects are not followed
        "slow": ("failed", 3, 429),  # retried until max_attempts
        "hang": ("failed", 3, None),
    }
    assert rows["hang"].error == "no answer within 0.3 s"


@on_store_loop
async def test_down_receiver_then_restart_gets_every_event_in_order(db: Database) -> None:  # noqa: F811
    """Three calls' events queue while the receiver's port is closed; the worker is stopped (a restart) and a
    new one, on the same database, delivers them all once the receiver is up: each once, in order per call."""
    tenant = await new_tenant(db)
    rec = Receiver(free_port())
    hook, _ = await subscribe(db, tenant, rec.url("/in"))
    calls = [uuid.uuid4() for _ in range(3)]
    first = WebhookWorker(db, lambda: CIPHER, FAST, LOOPBACK).start()
    for n, kind in enumerate(["call.started", "call.ended", "transcript.final"]):
        for call in calls:
            await emit(db, tenant, call, kind, n)
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # connection refused, again and again
    await first.stop()
    rows = await log_of(db, hook)
    assert len(rows) == 9 and all(r.status == "pending" for r in rows)
    tried = [r for r in rows if r.attempts]
    assert {r.call_id for r in tried} == set(calls) and all(r.payload["data"]["n"] == 0 for r in tried)
    assert all(r.error and "ConnectError" in r.error for r in tried)
    second = WebhookWorker(db, lambda: CIPHER, FAST, LOOPBACK)
    for _ in rec.serve():
        second.start()
        rows = await settled(db, hook)
    await second.stop()
    assert [r.status for r in rows] == ["delivered"] * 9
    got = rec.events("/in")
    assert len(got) == 9 and len({e["id"] for e in got}) == 9  # each once
    for call in calls:
        assert [e["data"]["n"] for e in got if e["call_id"] == str(call)] == [0, 1, 2]


@on_store_loop
async def test_a_crashed_workers_lease_expires(db: Database, receiver: Receiver) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    hook, _ = await subscribe(db, tenant, receiver.url(f"/crash-{tenant.hex}"))
    call = uuid.uuid4()
    await emit(db, tenant, call, "call.started", 0)
    await emit(db, tenant, call, "call.ended", 1)
    async with db.session() as s:  # a worker claims the first and dies without a word
        assert len(await claim(s, "dead-worker", 0.4, 10)) == 1  # the second waits for the first
    worker = WebhookWorker(db, lambda: CIPHER, FAST, LOOPBACK)
    assert await worker.run_once() == 0  # still leased
    await asyncio.sleep(0.5)
    worker.start()
    rows = await settled(db, hook)
    await worker.stop()
    assert [(r.status, r.attempts) for r in rows] == [("delivered", 1), ("delivered", 1)]
    assert [e["data"]["n"] for e in receiver.events(f"/crash-{tenant.hex}")] == [0, 1]


@on_store_loop
async def test_the_guard_refuses_private_addresses_at_delivery(db: Database) -> None:  # noqa: F811
    """A URL stored before the operator's policy changed (or a name resolving to loopback) is refused when sent."""
    tenant = await new_tenant(db)
    literal, _ = await subscribe(db, tenant, "http://10.1.2.3/hook")
    by_name, _ = await subscribe(db, tenant, f"http://localhost:{free_port()}/hook")
    await emit(db, tenant, uuid.uuid4(), "call.started")
    worker = WebhookWorker(db, lambda: CIPHER, FAST, OutboundPolicy.parse(""))
    assert await worker.run_once() == 2
    await worker.stop()
    ((a,), (b,)) = await log_of(db, literal), await log_of(db, by_name)
    assert (a.status, a.attempts, b.status, b.attempts) == ("failed", 1, "failed", 1)
    assert "private" in (a.error or "") and "loopback" in (b.error or ""), (a.error, b.error)


def analysed_agent() -> dict[str, Any]:
    verdict = json.dumps({"summary": "A table for two.", "success": True, "success_reason": "Booked."})
    return {
        "name": f"booking {uuid.uuid4().hex[:6]}",
        "system_prompt": "You book tables.",
        "greeting": "Hello.",
        "vad": {"provider": "energy"},
        "stt": {"provider": "canned", "options": {"text": "a table for two please"}},
        "llm": {
            "provider": "canned",
            "options": {"rules": [{"match": "Return a JSON", "reply": verdict}], "default": "Booked."},
        },
        "tts": {"provider": "tone", "fallback": None, "options": {"ms_per_char": 10}},
        "analysis": {"summary": True, "success": "The caller booked a table."},
    }


def caller_audio() -> bytes:
    rate = 16000
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.int16)
    pcm = np.concatenate([np.zeros(rate // 2, np.int16), tone, np.zeros(rate * 3 // 2, np.int16)])
    return pcm.astype("<i2").tobytes()


@on_store_loop
async def test_a_live_call_emits_its_four_events(db: Database, receiver: Receiver, tmp_path: Path) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    hook, _ = await subscribe(db, tenant, receiver.url(f"/live-{tenant.hex}"))
    store = Store(db, LocalBlobStore(tmp_path / "rec"), tenant)
    await run_keyed_call(store, analysed_agent(), caller_audio(), [], timeout_s=20)
    await asyncio.wait_for(analysis.drain(), 10)
    worker = WebhookWorker(db, lambda: CIPHER, FAST, LOOPBACK).start()
    rows = await settled(db, hook)
    await worker.stop()
    await store.blobs.aclose()
    assert [r.event_type for r in rows] == ["call.started", "call.ended", "transcript.final", "call.analyzed"]
    assert [r.status for r in rows] == ["delivered"] * 4
    started, ended, transcript, analysed = receiver.events(f"/live-{tenant.hex}")
    assert len({e["call_id"] for e in (started, ended, transcript, analysed)}) == 1
    assert started["agent_id"] == analysed["agent_id"] and started["agent_id"] is not None
    assert ended["data"]["status"] == "ended" and ended["data"]["duration_s"] > 0
    assert transcript["data"]["turns"][1]["caller_text"] == "a table for two please"
    assert analysed["data"]["analysis"]["success"] is True


SERVE_ENV = {
    "PARLEY_OUTBOUND_ALLOW": "127.0.0.1",  # the receiver is local
    "PARLEY_WEBHOOK_POLL_S": "0.1",
    "PARLEY_WEBHOOK_BACKOFF_BASE_S": "0.1",
    "PARLEY_WEBHOOK_BACKOFF_MAX_S": "0.3",
    "PARLEY_WEBHOOK_MAX_ATTEMPTS": "50",
}


async def emit_in(data_dir: Path, tenant_name: str, call: uuid.UUID) -> None:
    """An event in a service's outbox, written as the call code writes it (into its database)."""
    from parley.store.tenants import TenantRepo

    database = Database(f"sqlite+aiosqlite:///{(data_dir / 'parley.db').resolve()}")
    try:
        async with database.session() as s:
            tenant = await TenantRepo(s).by_name(tenant_name)
            assert tenant is not None
            await enqueue(s, tenant.id, "call.ended", {"status": "ended"}, call, uuid.uuid4())
    finally:
        await database.close()


def check_api(svc: Service, url: str) -> tuple[str, str, str]:
    """Creation (the secret once), refusals, and the other tenant's view; the two tenants' keys and the id."""
    a, b = f"wa-{secrets.token_hex(3)}", f"wb-{secrets.token_hex(3)}"
    key_a, key_b = svc.create_key(a), svc.create_key(b)
    with svc.client(key_a) as c:
        for bad in ("http://10.0.0.5/hook", "http://169.254.169.254/latest", "ftp://example.com/x", "wss://x.io"):
            r = c.post("/v1/webhooks", json={"url": bad, "events": ["call.ended"]})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "url"], (bad, r.text)
        assert c.post("/v1/webhooks", json={"url": url, "events": ["call.nope"]}).status_code == 422
        r = c.post("/v1/webhooks", json={"url": url, "events": ["call.ended", "call.ended"], "description": "crm"})
        assert r.status_code == 201, r.text
        created = r.json()
        register_secret(created["secret"])  # no log may hold it (tests/conftest.py)
        assert created["secret"].startswith("whsec_") and created["events"] == ["call.ended"]
        hook = created["id"]
        assert "secret" not in c.get(f"/v1/webhooks/{hook}").json()
        assert [w["id"] for w in c.get("/v1/webhooks").json()] == [hook]
        assert c.get(f"/v1/webhooks/{hook}/deliveries").json() == []
    with svc.client(key_b) as c:
        assert c.get("/v1/webhooks").json() == []
        assert c.get(f"/v1/webhooks/{hook}").status_code == 404
        assert c.get(f"/v1/webhooks/{hook}/deliveries").status_code == 404
        assert c.delete(f"/v1/webhooks/{hook}").status_code == 404
    return a, key_a, hook


def test_the_api_and_the_services_worker_across_a_restart(tmp_path: Path) -> None:
    """The receiver is down while the first service queues an event and is stopped; a second service on the same
    database delivers it once the receiver is up, and the log shows it."""
    rec = Receiver(free_port())
    with running_service(tmp_path, **SERVE_ENV) as svc:
        tenant, key, hook = check_api(svc, rec.url("/svc"))
        asyncio.run(emit_in(tmp_path, tenant, uuid.uuid4()))
        with svc.client(key) as c:
            deadline = time.monotonic() + 10
            while not (rows := c.get(f"/v1/webhooks/{hook}/deliveries").json())[0]["attempts"]:
                assert time.monotonic() < deadline, rows
                time.sleep(0.1)
        assert rows[0]["status"] == "pending" and "ConnectError" in rows[0]["error"]
    for _ in rec.serve():
        with running_service(tmp_path, **SERVE_ENV) as svc, svc.client(key) as c:
            deadline = time.monotonic() + 15
            while (row := c.get(f"/v1/webhooks/{hook}/deliveries").json()[0])["status"] == "pending":
                assert time.monotonic() < deadline, row
                time.sleep(0.1)
            assert (row["status"], row["response_code"]) == ("delivered", 200) and row["attempts"] >= 2
            assert row["latency_ms"] is not None and row["event_type"] == "call.ended"
            assert len(rec.events("/svc")) == 1
            assert c.delete(f"/v1/webhooks/{hook}").status_code == 204
            assert c.get(f"/v1/webhooks/{hook}").status_code == 404

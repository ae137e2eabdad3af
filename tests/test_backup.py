"""Backup and recovery as deploy/README.md tells an operator: pg_dump a PostgreSQL database holding calls made
through a real `parley serve`, pg_restore it into a fresh database, and a serve on the restored database reads
the same calls (transcripts, events) back through the API with the same key."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import websockets

from .support.live_call import talker
from .support.service import Service, _admin_sql, running_service

ADMIN = "postgresql://postgres@127.0.0.1:5432"


async def call(service: Service, key: str, agent_id: str) -> str:
    """A short talk call (0.6 s of silence, then hang up); its id."""
    with service.client(key) as c:
        token = c.post(f"/v1/agents/{agent_id}/talk-token").json()
    async with websockets.connect(service.url.replace("http", "ws") + token["url"]) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 60))
        started = time.monotonic()
        for k in range(30):
            await ws.send(bytes(640))
            await asyncio.sleep(max(0.0, started + (k + 1) * 0.02 - time.monotonic()))
        await ws.send(json.dumps({"type": "end"}))
        async for message in ws:
            if isinstance(message, str) and json.loads(message)["type"] == "end":
                break
    return str(first["call_id"])


def test_pg_dump_and_restore_keep_every_call(tmp_path: Path) -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.fail("pg_dump/pg_restore are missing (Debian package postgresql-client)")
    source, restored = f"parley_bk_{secrets.token_hex(4)}", f"parley_rs_{secrets.token_hex(4)}"
    asyncio.run(_admin_sql(f"CREATE DATABASE {source}"))
    try:
        env = {"PARLEY_TOKEN_SECRET": secrets.token_urlsafe(32)}
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{source}"
        with running_service(tmp_path / "before", PARLEY_DATABASE_URL=url, **env) as svc:
            key = svc.create_key("backup-tenant")
            with svc.client(key) as c:
                agent = c.post("/v1/agents", json={**talker(1), "name": "backed-up", "greeting": "Hi."}).json()
            ids = [asyncio.run(call(svc, key, agent["id"])) for _ in range(2)]
            with svc.client(key) as c:
                before = [c.get(f"/v1/calls/{i}").json() for i in ids]
                listed = c.get("/v1/calls").json()
        dump = tmp_path / "parley.dump"
        subprocess.run(["pg_dump", "--format=custom", "--no-owner", f"--file={dump}", f"{ADMIN}/{source}"],
                       check=True, timeout=120)  # fmt: skip
        asyncio.run(_admin_sql(f"CREATE DATABASE {restored}"))
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={ADMIN}/{restored}", str(dump)],
                       check=True, timeout=120)  # fmt: skip
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{restored}"
        with running_service(tmp_path / "after", PARLEY_DATABASE_URL=url, **env) as svc, svc.client(key) as c:
            after = [c.get(f"/v1/calls/{i}").json() for i in ids]
            assert c.get("/v1/calls").json() == listed
        assert after == before
        assert all(b["status"] == "ended" and b["turns"] for b in before)
    finally:
        for name in (source, restored):
            asyncio.run(_admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

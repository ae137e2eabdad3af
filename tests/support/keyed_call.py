"""A live call over the simulated clock, driven by a line of audio and keypad presses, and its stored record.

For tests of what happens inside a call (actions, keypad turns, failures): the real ``LiveCall`` on a SQLite
database and a local blob store, no socket, and the record read back as the database holds it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.agent.document import parse_agent
from parley.calls.control import CallControl
from parley.calls.identity import CallTarget
from parley.calls.line import CallLine
from parley.calls.live import LiveCall
from parley.calls.record_writer import CallStore
from parley.calls.session import Services
from parley.pipeline.clock import FastClock
from parley.store.blobs.local import LocalBlobStore
from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.tenants import TenantRepo
from parley.transports.traits import TransportTraits

RATE = 16000
FRAME_BYTES = 640  # 20 ms of 16 kHz PCM16


@dataclass
class Store:
    db: Database
    blobs: LocalBlobStore
    tenant: uuid.UUID


@asynccontextmanager
async def open_store(tmp_path: Path, tenant_name: str) -> AsyncIterator[Store]:
    """A migrated SQLite database and a blob folder under ``tmp_path``, with one tenant."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    await db.migrate()
    blobs = LocalBlobStore(tmp_path / "recordings")
    async with db.session() as s:
        tenant = (await TenantRepo(s).get_or_create(tenant_name)).id
    try:
        yield Store(db, blobs, tenant)
    finally:
        await blobs.aclose()
        await db.close()


@dataclass
class Record:
    reason: str
    end_reason: str | None
    turns: dict[int, Any]
    events: list[dict[str, Any]]
    speech_bytes: int  # agent audio the line carried

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


async def run_keyed_call(
    store: Store,
    doc: dict[str, Any],
    pcm: bytes,
    presses: list[tuple[float, str]],
    *,
    control: CallControl | None = None,
    timeout_s: float = 90,
) -> Record:
    """One live call: ``pcm`` (16 kHz PCM16) as the caller's line, keypad ``presses`` at call times."""
    document = parse_agent(doc)
    services = await Services.create(document)
    target = CallTarget(store.tenant, uuid.uuid4(), 1, document.name, document)
    sent = 0

    async def send_audio(audio: bytes) -> None:
        nonlocal sent
        sent += len(audio)

    line = CallLine(TransportTraits("test"), send_audio, control or CallControl())
    call = LiveCall(target, services, CallStore(store.db, store.blobs), line, clock=FastClock())

    async def caller() -> AsyncIterator[bytes]:
        due = sorted(presses)
        for k in range(0, len(pcm), FRAME_BYTES):
            while due and due[0][0] <= k / 2 / RATE:
                await call.dtmf(due.pop(0)[1])
            yield pcm[k : k + FRAME_BYTES]

    try:
        reason = await asyncio.wait_for(call.run(caller()), timeout_s)
    finally:
        await services.aclose()
    assert call.call_id is not None
    async with store.db.session() as s:
        repo = CallRepo(s)
        row = await repo.get(store.tenant, call.call_id)
        turns = {t.turn: t for t in await repo.turns(store.tenant, call.call_id)}
        events = [{**e.data, "type": e.kind} for e in await repo.events(store.tenant, call.call_id)]
    assert row is not None
    return Record(reason, row.end_reason, turns, events, sent)

"""Memory of one long live call: does it grow with the call's length? Prints JSON.

A 30-minute call (a caller question every 20 s, the agent answering each) runs
through the real live-call path — pipeline, turns and events written to the
database as they happen, the recording uploaded to the blob store in parts — on
the fast clock (idle waits skipped, model work at real speed). The process's
resident memory is sampled every 5 minutes of call time.

    .venv/bin/python bench/call_memory.py [--minutes 30] [--out file.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from parley.agent.document import load_agent
from parley.calls.identity import CallTarget
from parley.calls.line import CallLine
from parley.calls.live import LiveCall
from parley.calls.record_writer import CallStore
from parley.calls.session import Services
from parley.calls.synthetic_caller import speak
from parley.knowledge import service
from parley.knowledge.ingest import Ingestor
from parley.knowledge.service import KnowledgeBase
from parley.logs import configure_logging
from parley.pipeline.clock import FastClock
from parley.store.blobs.local import LocalBlobStore
from parley.store.db import Database
from parley.store.knowledge import KnowledgeRepo
from parley.store.tenants import TenantRepo
from parley.transports.traits import TransportTraits

ROOT = Path(__file__).resolve().parents[1]
FACTS = ROOT / "examples/agents/knowledge/bright-smile.md"


async def install_knowledge(db: Database, tenant: uuid.UUID) -> None:
    """The receptionist's collection in the call's database, ingested, and the knowledge base installed as
    ``parley serve`` installs it: the call retrieves on every turn, as a served one does."""
    async with db.session() as s:
        repo = KnowledgeRepo(s)
        coll = await repo.create_collection(tenant, "bright-smile", "")
        await repo.put_document(coll, "bright-smile.md", FACTS.read_bytes(), "text/markdown")
    kb = KnowledgeBase(db)
    await Ingestor(kb).run_once()
    service.install(kb)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(minutes: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="parley-mem-"))
    db = Database(f"sqlite+aiosqlite:///{work / 'p.db'}")
    await db.migrate()
    async with db.session() as s:
        tenant = await TenantRepo(s).get_or_create("bench")
    await install_knowledge(db, tenant.id)
    agent = load_agent(ROOT / "examples/agents/receptionist.yaml")
    services = await Services.create(agent)
    question = await speak("What are your opening hours on Saturday?", "joe-quick")
    period = np.zeros(16000 * 20, dtype=np.int16)
    period[16000 : 16000 + question.size] = question
    period_bytes = period.astype("<i2").tobytes()
    samples: list[dict[str, float]] = []
    started = time.perf_counter()

    async def audio() -> AsyncIterator[bytes]:
        total = int(minutes * 60 / 20)
        for i in range(total):
            if i % 15 == 0:  # every 5 minutes of call time
                samples.append({"call_minutes": i * 20 / 60, "rss_mb": round(rss_mb(), 1)})
            for k in range(0, len(period_bytes), 640):
                yield period_bytes[k : k + 640]
        samples.append({"call_minutes": minutes, "rss_mb": round(rss_mb(), 1)})

    async def ignore(_: Any) -> None:
        pass

    target = CallTarget(tenant.id, uuid.uuid4(), 1, agent.name, agent)
    line = CallLine(TransportTraits("bench"), ignore)
    call = LiveCall(target, services, CallStore(db, LocalBlobStore(work / "rec")), line, clock=FastClock())
    reason = await call.run(audio())
    await services.aclose()
    await db.close()
    recording = next((work / "rec").rglob("*.wav"))
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    return {
        "benchmark": "live_call_memory",
        "call_minutes": minutes,
        "end_reason": reason,
        "wall_s": round(time.perf_counter() - started, 1),
        "recording_mb": round(recording.stat().st_size / 2**20, 1),
        "rss_samples": samples,
        "rss_growth_after_5_min_mb": round(last["rss_mb"] - first["rss_mb"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    configure_logging(False)
    result = asyncio.run(run(args.minutes))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

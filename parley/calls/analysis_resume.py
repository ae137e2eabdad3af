"""Post-call analyses a restart would otherwise lose: the call's end marks the analysis ``pending`` in the same
transaction that ends the row, and when ``parley serve`` starts again it runs its own worker's pending ones (and
those of calls its crash left unfinished, which never reached their end), so an accepted call is analysed once.

Each worker resumes only the calls it ran (``Call.worker_id``), as crash recovery does, so two workers never
analyse one call; a worker that never comes back leaves its calls pending (``POST /v1/calls/{id}/analysis`` runs
one by hand).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from sqlalchemy import select

from parley.agent.document import AgentDocumentError, parse_agent
from parley.calls.analysis import start_after_call
from parley.pipeline.frames import EndReason
from parley.store.agents import AgentRepo
from parley.store.db import Database
from parley.store.models import Call, utcnow

log = structlog.get_logger(__name__)

PENDING = {"status": "pending"}
LOOK_BACK = timedelta(days=1)  # older pending analyses are left for a person to re-run
MAX_RESUMED = 500


def _due(call: Call) -> bool:
    if call.analysis is None:  # a call this worker's crash ended never reached its analysis
        return call.end_reason == EndReason.WORKER_CRASHED
    return call.analysis.get("status") in ("pending", "running")


async def resume_pending(db: Database, worker_id: str | None) -> int:
    """Starts the analyses ``worker_id`` owed when it stopped; how many."""
    since = utcnow() - LOOK_BACK
    async with db.session() as s:
        calls = [
            c
            for c in await s.scalars(
                select(Call)
                .where(Call.worker_id == worker_id, Call.status != "active", Call.ended_at >= since)
                .order_by(Call.ended_at)
            )
            if _due(c)
        ][:MAX_RESUMED]
        found: list[tuple[uuid.UUID, uuid.UUID, dict[str, object] | None]] = []
        for c in calls:
            version = await AgentRepo(s).version(c.tenant_id, c.agent_id, c.agent_version)
            found.append((c.tenant_id, c.id, version.document if version is not None else None))
    started = 0
    for tenant_id, call_id, raw in found:
        if raw is None:
            continue
        try:
            document = parse_agent(raw)
        except AgentDocumentError:
            log.warning("analysis_not_resumed", call_id=str(call_id), why="the agent version no longer parses")
            continue
        if document.analysis is None or not document.analysis.wants_anything():
            continue
        start_after_call(db, tenant_id, call_id, document)
        started += 1
    if started:
        log.info("analyses_resumed", calls=started, worker_id=worker_id)
    return started

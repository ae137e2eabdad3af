"""Start-up recovery after a crash (``kill -9``, a lost node): the calls the dead process was running.

Its calls are still 'active' and their recordings unfinished (a local ``.part`` file, an S3 multipart
upload, staged Azure blocks). Each call is ended as ``worker-crashed`` at its last sign of life (a turn,
an event or recorded audio), not at the restart, and its recording is finished from what reached storage:
what the caller heard up to the crash, less the last unsent moment.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog

from parley.calls.recorder import fixed_wav_head, recording_key, wav_format
from parley.pipeline.frames import EndReason
from parley.store.blobs import BlobStore
from parley.store.blobs.base import Recovered
from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.models import utcnow

log = structlog.get_logger(__name__)

CRASHED = EndReason.WORKER_CRASHED


class _WavFix:
    """Patches a recovered recording's header and remembers how much audio it holds."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, head: bytes, size: int) -> bytes:
        fixed = fixed_wav_head(head, size)
        fmt = wav_format(fixed)
        if fmt is not None:
            rate, block = fmt
            self.seconds = (size - len(fixed)) // block / rate
        return fixed


async def _recover_recording(blobs: BlobStore, key: str) -> tuple[Recovered | None, float]:
    fix = _WavFix()
    try:
        return await blobs.recover(key, fix), fix.seconds
    except Exception as exc:  # one bad object must not keep the service down or the call open
        log.warning("recording_recovery_failed", key=key, error=repr(exc))
        return None, 0.0


async def recover_crashed_calls(
    db: Database, blobs: BlobStore, worker_id: str | None, *, reason: str = CRASHED, exact: bool = False
) -> int:
    """End every call ``worker_id`` left unfinished, with its recording recovered; returns how many.

    ``exact``: only the calls recorded under that worker (another worker ending a lost one's calls,
    :mod:`parley.calls.registry`), not those recorded with no worker."""
    async with db.session() as s:
        repo = CallRepo(s)
        found = [
            (c.id, c.tenant_id, c.started_at, await repo.last_activity(c))
            for c in await repo.unfinished(worker_id)
            if not exact or c.worker_id == worker_id
        ]
    ended = 0
    for call_id, tenant_id, started_at, last in found:
        ended += await _close(db, blobs, call_id, tenant_id, started_at, last, reason)
    if ended:
        log.warning("crashed_calls_ended", calls=ended, worker_id=worker_id, reason=reason)
    return ended


async def _close(
    db: Database,
    blobs: BlobStore,
    call_id: uuid.UUID,
    tenant_id: uuid.UUID,
    started_at: datetime,
    last: datetime,
    reason: str = CRASHED,
) -> bool:
    key = recording_key(tenant_id, call_id)
    recording, seconds = await _recover_recording(blobs, key)
    signs = [last, started_at + timedelta(seconds=seconds)]
    if recording is not None and recording.modified is not None:
        signs.append(recording.modified)
    ended_at = min(max(signs), utcnow())
    async with db.session() as s:
        done = await CallRepo(s).close_unfinished(
            call_id, reason, ended_at, key if recording else None, recording.size if recording else None
        )
    log.info(
        "crashed_call_ended",
        call_id=str(call_id),
        recording_bytes=recording.size if recording else None,
        duration=round((ended_at - started_at).total_seconds(), 2),
    )
    return done

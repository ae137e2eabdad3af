"""``GET /v1/calls/export``: every call the list's filters match, as CSV or a JSON array, streamed page by page.

Nothing is capped and nothing is held: each page (:data:`PAGE` calls, keyset-paged, a short session of its own
so no transaction stays open for the whole download) is written out before the next is read. CSV cells that a
spreadsheet would run as a formula are prefixed with ``'`` (a caller's number such as ``+1555…`` is left alone).
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

from fastapi.responses import StreamingResponse

from parley.store.call_filters import CallFilter, TurnStats, page_after, turn_stats
from parley.store.db import Database
from parley.store.models import Call

PAGE = 500
COLUMNS = (
    "id", "agent_name", "agent_version", "transport", "direction", "status", "caller", "called", "started_at",
    "ended_at", "duration_s", "end_reason", "turns", "v2v_p50", "v2v_p95", "analysis_summary", "analysis_success",
)  # fmt: skip
_NUMBERLIKE = re.compile(r"[+-][0-9 ()./-]*")

EXPORT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "every matching call: a JSON array of objects, or CSV with a header row (same columns)",
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                    "text/csv": {"schema": {"type": "string"}}},
    },
}  # fmt: skip


def export_response(
    db: Database, tenant_id: uuid.UUID, match: CallFilter, fmt: Literal["json", "csv"]
) -> StreamingResponse:
    """The streamed download (``calls.csv`` / ``calls.json``)."""
    body = _csv(db, tenant_id, match) if fmt == "csv" else _json(db, tenant_id, match)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    headers = {"Content-Disposition": f'attachment; filename="calls.{fmt}"', "Cache-Control": "private, no-store"}
    return StreamingResponse(body, media_type=media, headers=headers)


async def rows(db: Database, tenant_id: uuid.UUID, match: CallFilter) -> AsyncIterator[list[dict[str, Any]]]:
    """The export's rows, a page at a time, newest call first."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with db.session() as s:
            calls = await page_after(s, tenant_id, match, after, PAGE)
            stats = await turn_stats(s, tenant_id, [c.id for c in calls])
        if not calls:
            return
        yield [_row(c, stats.get(c.id, TurnStats())) for c in calls]
        if len(calls) < PAGE:
            return
        after = (calls[-1].started_at, calls[-1].id)


def _row(call: Call, stats: TurnStats) -> dict[str, Any]:
    analysis = call.analysis or {}
    summary = analysis.get("summary")
    return {
        "id": str(call.id),
        "agent_name": call.agent_name,
        "agent_version": call.agent_version,
        "transport": call.transport,
        "direction": call.direction,
        "status": call.status,
        "caller": call.caller,
        "called": call.called,
        "started_at": call.started_at.isoformat(),
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        "duration_s": call.duration_s,
        "end_reason": call.end_reason,
        "turns": stats.turns,
        "v2v_p50": stats.v2v_p50,
        "v2v_p95": stats.v2v_p95,
        "analysis_summary": summary if isinstance(summary, str) else None,
        "analysis_success": call.analysis_success,
    }


async def _json(db: Database, tenant_id: uuid.UUID, match: CallFilter) -> AsyncIterator[str]:
    yield "["
    first = True
    async for page in rows(db, tenant_id, match):
        for row in page:
            yield ("\n" if first else ",\n") + json.dumps(row, ensure_ascii=False)
            first = False
    yield "]\n" if first else "\n]\n"


async def _csv(db: Database, tenant_id: uuid.UUID, match: CallFilter) -> AsyncIterator[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    yield out.getvalue()
    async for page in rows(db, tenant_id, match):
        out.seek(0)
        out.truncate()
        for row in page:
            writer.writerow([_cell(row[c]) for c in COLUMNS])
        yield out.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: None empty, booleans true/false, text that a spreadsheet would evaluate defused."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value and value[0] in "=+-@\t\r" and not _NUMBERLIKE.fullmatch(value):
        return "'" + value
    return value

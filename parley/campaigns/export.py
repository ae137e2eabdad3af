"""A campaign's results, streamed: one row per contact with its last call's analysis fields as columns.

CSV needs its columns up front, so a first pass collects the variable and analysis field names (keys only),
the second writes rows; both hold one batch of contacts at a time.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from parley.store.campaigns import CampaignRepo
from parley.store.db import Database

BASE = ("row", "phone", "timezone", "state", "outcome", "attempts", "call_id")


def _row(contact: Any, attempt: Any, analysis: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "row": contact.row, "phone": contact.phone, "timezone": contact.timezone, "state": contact.state,
        "outcome": contact.outcome, "attempts": contact.attempts,
        "call_id": str(attempt.call_id) if attempt else None,
        "variables": contact.variables or {},
    }  # fmt: skip
    a = analysis or {}
    fields = a.get("fields") if isinstance(a.get("fields"), dict) else {}
    out["analysis"] = {"summary": a.get("summary"), "success": a.get("success"), **(fields or {})}
    return out


async def _rows(db: Database, campaign_id: uuid.UUID) -> AsyncIterator[dict[str, Any]]:
    async with db.session() as s:
        async for contact, attempt, analysis in CampaignRepo(s).export_rows(campaign_id):
            yield _row(contact, attempt, analysis)


async def json_lines(db: Database, campaign_id: uuid.UUID) -> AsyncIterator[bytes]:
    async for row in _rows(db, campaign_id):
        yield (json.dumps(row, default=str) + "\n").encode()


async def json_array(db: Database, campaign_id: uuid.UUID) -> AsyncIterator[bytes]:
    first = True
    yield b"["
    async for row in _rows(db, campaign_id):
        yield (b"" if first else b",") + json.dumps(row, default=str).encode()
        first = False
    yield b"]"


def _cell(value: Any) -> str:
    text = "" if value is None else (json.dumps(value) if isinstance(value, dict | list | bool) else str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not text[1:2].isdigit() else text  # no formulas


async def csv_stream(db: Database, campaign_id: uuid.UUID) -> AsyncIterator[bytes]:
    variables: dict[str, None] = {}
    analysis: dict[str, None] = {"summary": None, "success": None}
    async for row in _rows(db, campaign_id):
        variables.update(dict.fromkeys(row["variables"]))
        analysis.update(dict.fromkeys(k for k in row["analysis"]))
    header = [*BASE, *variables, *(f"analysis.{k}" for k in analysis)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    async for row in _rows(db, campaign_id):
        cells = [row[k] for k in BASE] + [row["variables"].get(k) for k in variables]
        writer.writerow([_cell(c) for c in cells + [row["analysis"].get(k) for k in analysis]])
        if buf.tell() > 1 << 16:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()

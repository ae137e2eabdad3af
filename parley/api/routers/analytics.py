"""``GET /v1/analytics``: a tenant's calls summed up day by day, for the console's charts.

Days are the callers' calendar days in ``tz`` (an IANA zone, UTC by default), by each call's start. The range
is bounded (at most ``MAX_RANGE_DAYS``), so one request stays quick however many calls a tenant has.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from parley.api.console_schemas import AnalyticsOut
from parley.api.deps import ReadCalls, State
from parley.store.analytics import AnalyticsRepo

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

DEFAULT_DAYS = 30
MAX_RANGE_DAYS = 366
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}")
EARLIEST, LATEST = datetime(1970, 1, 2, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)


def _invalid(field: str, message: str, value: Any) -> RequestValidationError:
    """The 422 FastAPI gives a bad query parameter, for the checks only this route can make."""
    return RequestValidationError([{"loc": ("query", field), "msg": message, "type": "value_error", "input": value}])


def zone(tz: str) -> ZoneInfo:
    """``tz`` as a zone; a 422 unless it is an IANA name (letters, digits, ``/_+-``; no dots, so no paths) that
    the system's time zone database holds."""
    if _ZONE_NAME.fullmatch(tz):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise _invalid("tz", "an IANA time zone name, such as Europe/Berlin or UTC", tz)


def _aware(value: datetime | None, tz: ZoneInfo, field: str) -> datetime | None:
    """A naive time read as local time in ``tz`` (what a person picking dates means); bounded to sane years."""
    if value is None:
        return None
    try:
        aware = value.replace(tzinfo=tz) if value.tzinfo is None else value
        aware.astimezone(UTC)
    except (OverflowError, ValueError):
        raise _invalid(field, "a time between 1970 and 9998", str(value)) from None
    if not EARLIEST <= aware <= LATEST:
        raise _invalid(field, "a time between 1970 and 9998", str(value))
    return aware


def time_range(since: datetime | None, until: datetime | None, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[since, until): by default the last 30 days up to now; at most ``MAX_RANGE_DAYS`` long."""
    end = _aware(until, tz, "until") or datetime.now(UTC)
    start = _aware(since, tz, "since") or max(EARLIEST, end - timedelta(days=DEFAULT_DAYS))
    if start >= end:
        raise _invalid("since", "since must be before until", str(since))
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise _invalid("since", f"the range may be at most {MAX_RANGE_DAYS} days", str(since))
    return start.astimezone(UTC), end.astimezone(UTC)


@router.get("", response_model=AnalyticsOut)
async def analytics(
    who: ReadCalls,
    state: State,
    since: Annotated[datetime | None, Query(description="start, inclusive (default: until - 30 days)")] = None,
    until: Annotated[datetime | None, Query(description="end, exclusive (default: now)")] = None,
    agent_id: Annotated[uuid.UUID | None, Query(description="only this agent's calls")] = None,
    tz: Annotated[str, Query(max_length=64, description="IANA time zone of the days (naive times too)")] = "UTC",
) -> dict[str, Any]:
    """Calls, minutes, turns, voice-to-voice (average, p50, p95; seconds) and interruption rate (interrupted turns
    / turns) per day and in total, and calls per end reason and per transport. Times without an offset are read
    in ``tz``; the range is at most 366 days."""
    zone_info = zone(tz)
    start, end = time_range(since, until, zone_info)
    async with state.db.session() as s:
        found = await AnalyticsRepo(s).figures(who.tenant_id, start, end, zone_info, agent_id)
    totals = found.totals.out()
    return {
        "since": start,
        "until": end,
        "tz": tz,
        "days": [{"date": day, **figures.out()} for day, figures in found.days],
        "totals": {**totals, "v2v_samples": len(found.totals.v2v)},
        "end_reasons": found.end_reasons,
        "transports": found.transports,
    }

"""Calling windows in the contact's local time: is one open now, and when does the next one open.

Wall-clock times are compared in the contact's IANA zone (``zoneinfo``), so a 09:00-17:00 window stays
09:00-17:00 local across a daylight-saving change. Two edge cases are decided here once:

* a window opening inside a spring-forward gap (02:30 on a day 02:00-03:00 does not exist) opens at the first
  instant whose local time is past its start, the end of the gap;
* a window opening at a repeated fall-back time (01:30 happening twice) opens at its first occurrence.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order
_LOOKAHEAD_DAYS = 8  # a window on any weekday recurs within a week; one more day covers today's closed one


class Window(Protocol):
    """What :class:`parley.campaigns.schedule.CallingWindow` offers (any object with these reads)."""

    @property
    def days(self) -> Sequence[str]: ...

    @property
    def start(self) -> time: ...

    @property
    def end(self) -> time: ...


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The zone ``name``; UTC for a name this machine does not know (import validated it: a stale tzdata)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def is_open(windows: Sequence[Window], tz: str, at: datetime) -> bool:
    """Whether the instant ``at`` (aware) falls inside one of ``windows`` in zone ``tz``; no windows: always."""
    if not windows:
        return True
    local = at.astimezone(zone(tz))
    day, clock = DAYS[local.weekday()], local.time().replace(tzinfo=None)
    return any(day in w.days and w.start <= clock < w.end for w in windows)


def _local_instant(d: date, t: time, tz: ZoneInfo) -> datetime:
    """The first UTC instant at which the local clock in ``tz`` on day ``d`` reads ``t`` or later."""
    naive = datetime.combine(d, t)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first  # exists (once or, at a fall-back, twice: fold=0 is the first)
    # a gap: fold=1 lands before it, fold=0 after it; the opening is the gap's end, found by halving (to 1 s)
    low, high = naive.replace(tzinfo=tz, fold=1).astimezone(UTC), first
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= naive:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0)


def next_opening(windows: Sequence[Window], tz: str, at: datetime) -> datetime | None:
    """The first instant at or after ``at`` when a window is open in zone ``tz`` (``at`` itself if one is open
    now); None when no window can ever open (every window names no day)."""
    if is_open(windows, tz, at):
        return at
    info = zone(tz)
    today = at.astimezone(info).date()
    best: datetime | None = None
    for offset in range(_LOOKAHEAD_DAYS):
        d = today + timedelta(days=offset)
        for w in windows:
            if DAYS[d.weekday()] not in w.days:
                continue
            opening = _local_instant(d, w.start, info)
            if opening >= at and (best is None or opening < best) and is_open(windows, tz, opening):
                best = opening
        if best is not None:
            return best
    return None


def open_zones(windows: Sequence[Window], zones: Sequence[str], at: datetime) -> list[str]:
    """The zones among ``zones`` where a window is open at ``at``: the scheduler claims only their contacts."""
    return [tz for tz in zones if is_open(windows, tz, at)]

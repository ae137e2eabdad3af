"""How many contacts a scheduler may dial now: the smallest room left under every limit.

The counts come from the database inside the claim's transaction (the tenant row locked on PostgreSQL), so
several workers together keep to them; this module only does the arithmetic, which keeps it easy to test.

The per-minute rate is a sliding 60 s window, spread out: at most ``ceil(rate / 6)`` dials in any 10 s, so a
campaign of 60 a minute dials about one a second instead of 60 in its first second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW_S = 60.0
SPREAD_S = 10.0


@dataclass(frozen=True)
class Load:
    """What is under way when a claim is made (each count read in the claim's transaction)."""

    campaign_in_flight: int  # this campaign's attempts with no outcome yet
    tenant_in_flight: int  # the same over every campaign of the tenant
    started_last_minute: int  # this campaign's attempts started in the last WINDOW_S
    started_last_spread: int  # … and in the last SPREAD_S
    worker_free: int  # calls this worker may still take (its cap less its calls and dials under way)
    oldest_last_minute: datetime | None = None  # when the oldest of those started
    oldest_last_spread: datetime | None = None


@dataclass(frozen=True)
class Limits:
    max_concurrent: int
    max_calls_per_minute: int
    tenant_max_concurrent: int


def spread_limit(per_minute: int) -> int:
    """Dials allowed in any SPREAD_S window for a rate of ``per_minute``."""
    return max(1, math.ceil(per_minute * SPREAD_S / WINDOW_S))


def room(load: Load, limits: Limits) -> int:
    """How many more dials fit now (0 or more)."""
    return max(
        0,
        min(
            limits.max_concurrent - load.campaign_in_flight,
            limits.tenant_max_concurrent - load.tenant_in_flight,
            limits.max_calls_per_minute - load.started_last_minute,
            spread_limit(limits.max_calls_per_minute) - load.started_last_spread,
            load.worker_free,
        ),
    )


def rate_reopens(load: Load, limits: Limits) -> datetime | None:
    """When the per-minute rate can next allow a dial, if it allows none now: no earlier than the oldest counted
    dial leaving its window. Other workers' dials only push it later, so a scheduler may skip claiming until
    then; None when the rate is not what holds dials back."""
    bounds: list[datetime] = []
    if load.started_last_minute >= limits.max_calls_per_minute and load.oldest_last_minute is not None:
        bounds.append(load.oldest_last_minute + timedelta(seconds=WINDOW_S))
    if load.started_last_spread >= spread_limit(limits.max_calls_per_minute) and load.oldest_last_spread is not None:
        bounds.append(load.oldest_last_spread + timedelta(seconds=SPREAD_S))
    return max(bounds) if bounds else None


def worker_free(limit: int, in_use: int, dialing: int, draining: bool, unlimited: int = 1000) -> int:
    """Calls this worker may still start: none while draining; ``unlimited`` when it has no cap (limit 0).

    ``dialing`` counts this worker's dials not yet holding a call slot (ringing), which will take one."""
    if draining:
        return 0
    if not limit:
        return unlimited
    return max(0, limit - in_use - dialing)

"""How many contacts a scheduler may dial now: the smallest room left under every limit.

The counts come from the database inside the claim's transaction (the tenant row locked on PostgreSQL), so
several workers together keep to them; this module only does the arithmetic, which keeps it easy to test.

The per-minute rate is a sliding 60 s window, spread out: at most ``ceil(rate / 6)`` dials in any 10 s and
``ceil(rate / 60)`` in any second, so a campaign of 60 a minute dials one a second (what a carrier's default
calls-per-second limit takes) instead of 60 in its first second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

WINDOW_S = 60.0
#: the rate's windows: each allows its share of the per-minute rate
WINDOWS_S = (60.0, 10.0, 1.0)


@dataclass(frozen=True)
class Load:
    """What is under way when a claim is made (each count read in the claim's transaction)."""

    campaign_in_flight: int  # this campaign's attempts with no outcome yet
    tenant_in_flight: int  # the same over every campaign of the tenant
    worker_free: int  # calls this worker may still take (its cap less its calls and dials under way)
    started: Mapping[float, int] = field(default_factory=dict)  # window (s): attempts started in the last window
    oldest: Mapping[float, datetime] = field(default_factory=dict)  # window (s): when the oldest of those started


@dataclass(frozen=True)
class Limits:
    max_concurrent: int
    max_calls_per_minute: int
    tenant_max_concurrent: int


def window_limit(per_minute: int, window_s: float) -> int:
    """Dials allowed in any ``window_s`` for a rate of ``per_minute`` (at least one)."""
    return max(1, math.ceil(per_minute * window_s / WINDOW_S))


def room(load: Load, limits: Limits) -> int:
    """How many more dials fit now (0 or more)."""
    rate = [window_limit(limits.max_calls_per_minute, w) - load.started.get(w, 0) for w in WINDOWS_S]
    return max(
        0,
        min(
            limits.max_concurrent - load.campaign_in_flight,
            limits.tenant_max_concurrent - load.tenant_in_flight,
            load.worker_free,
            *rate,
        ),
    )


def rate_reopens(load: Load, limits: Limits) -> datetime | None:
    """When the rate can next allow a dial, if it allows none now: no earlier than the oldest counted dial
    leaving each full window. Other workers' dials only push it later, so a scheduler may skip claiming until
    then; None when the rate is not what holds dials back."""
    bounds = [
        load.oldest[w] + timedelta(seconds=w)
        for w in WINDOWS_S
        if load.started.get(w, 0) >= window_limit(limits.max_calls_per_minute, w) and w in load.oldest
    ]
    return max(bounds) if bounds else None


def worker_free(limit: int, in_use: int, dialing: int, draining: bool, unlimited: int = 1000) -> int:
    """Calls this worker may still start: none while draining; ``unlimited`` when it has no cap (limit 0).

    ``dialing`` counts this worker's dials not yet holding a call slot (ringing), which will take one."""
    if draining:
        return 0
    if not limit:
        return unlimited
    return max(0, limit - in_use - dialing)

"""Admission control for INVITEs: how much one source address may cost the endpoint before its calls are ACKed.

Anyone who can reach the SIP port can send INVITEs and never ACK the 200: each one holds an RTP port and a
call's services until the 2xx retransmissions give up. At the default 500 ports, 16 such INVITEs a second
kept every real caller out. The guard bounds that per source address (the datagram's own, not a Via the
sender writes): a token bucket on new INVITEs, and a cap on INVITEs being answered but not yet ACKed.

A sender that spoofs its source never sees the 200, so it cannot ACK either: its dialogs end at the ACK
timeout like any other and count against the address it spoofed, never against a real caller's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_SOURCES = 10_000  # buckets and counters kept; beyond, idle ones are forgotten


@dataclass(frozen=True)
class Refusal:
    """Why an INVITE is not taken: the status to answer and a Retry-After in seconds."""

    status: int
    reason: str
    retry_after: int


class InviteGuard:
    """Per-source INVITE rate (token bucket) and unacknowledged-dialog cap; 0 turns either off."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_unacked: int,
        unacked_retry_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self.max_unacked = max_unacked
        self.unacked_retry = max(1, math.ceil(unacked_retry_s))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, when)
        self.unacked: dict[str, int] = {}

    def admit(self, source: str) -> Refusal | None:
        """None (and one more unacknowledged dialog for ``source``) when the INVITE may be answered."""
        if self.max_unacked and self.unacked.get(source, 0) >= self.max_unacked:
            return Refusal(486, "Busy Here", self.unacked_retry)
        if self.rate > 0:
            wait = self._take(source)
            if wait > 0:
                return Refusal(503, "Service Unavailable", max(1, math.ceil(wait)))
        self.unacked[source] = self.unacked.get(source, 0) + 1
        return None

    def release(self, source: str) -> None:
        """The INVITE from ``source`` was ACKed, refused, cancelled or timed out."""
        count = self.unacked.get(source, 0) - 1
        if count > 0:
            self.unacked[source] = count
        else:
            self.unacked.pop(source, None)

    def _take(self, source: str) -> float:
        """Take a token; 0 on success, else the seconds until one is there."""
        now = self._clock()
        tokens, when = self._buckets.get(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self._buckets) >= MAX_SOURCES and source not in self._buckets:
            self._forget_idle(now)
        self._buckets[source] = (tokens - 1.0, now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled (they hold nothing a new bucket would not); else the oldest half."""
        full = [s for s, (t, w) in self._buckets.items() if t + (now - w) * self.rate >= self.burst]
        for source in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[source]

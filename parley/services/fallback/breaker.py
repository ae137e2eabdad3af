"""A provider's health, shared by every call of the process: one call's outage protects the next calls.

States: ``closed`` (serving), ``open`` (a transient failure: skipped until its cool-down ends, which doubles on
each failed probe and honours Retry-After), ``half-open`` (cool-down over: a **synthetic** probe — never a copy of
a caller's words — decides; callers still go elsewhere meanwhile), ``disabled`` (a permanent failure: auth,
unknown model or voice, quota; out until its configuration changes, which is a new breaker, keyed by a
fingerprint of the options).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from parley.services.errors import ErrorKind, ProviderError

MIN_COOLDOWN_S = 5.0
MAX_COOLDOWN_S = 120.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"
    DISABLED = "disabled"


@dataclass
class Breaker:
    """One provider configuration's health."""

    name: str
    state: BreakerState = BreakerState.CLOSED
    cooldown_s: float = MIN_COOLDOWN_S
    reopen_at: float = 0.0
    last_error: str = ""
    clock: Any = field(default=time.monotonic, repr=False)

    def serving(self) -> bool:
        """Whether a caller's request may go to this provider now."""
        return self.state is BreakerState.CLOSED

    def probe_due(self) -> bool:
        """An open breaker whose cool-down is over: time for a synthetic probe (moves it to half-open)."""
        if self.state is BreakerState.OPEN and self.clock() >= self.reopen_at:
            self.state = BreakerState.HALF_OPEN
            return True
        return False

    def succeeded(self) -> BreakerState | None:
        """A request or probe worked; returns the state it left when that changed."""
        if self.state in (BreakerState.CLOSED, BreakerState.DISABLED):
            return None
        was, self.state, self.cooldown_s = self.state, BreakerState.CLOSED, MIN_COOLDOWN_S
        return was

    def failed(self, error: ProviderError) -> BreakerState:
        """Open (transient) or disable (permanent) after ``error``; returns the new state."""
        self.last_error = error.kind.value
        if error.permanent:
            self.state = BreakerState.DISABLED
            return self.state
        if self.state is BreakerState.HALF_OPEN:
            self.cooldown_s = min(MAX_COOLDOWN_S, self.cooldown_s * 2)
        wait = self.cooldown_s
        if error.kind is ErrorKind.RATE_LIMIT and error.retry_after:
            wait = max(wait, min(MAX_COOLDOWN_S, error.retry_after))
        self.state, self.reopen_at = BreakerState.OPEN, self.clock() + wait
        return self.state


_BREAKERS: dict[str, Breaker] = {}


def fingerprint(stage: str, provider: str, options: dict[str, Any]) -> str:
    """A key for one provider configuration (secrets included only as a hash, never kept)."""
    blob = json.dumps([stage, provider, options], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def breaker_for(stage: str, provider: str, options: dict[str, Any]) -> Breaker:
    """The process-wide breaker of this configuration (made on first use)."""
    key = fingerprint(stage, provider, options)
    if key not in _BREAKERS:
        _BREAKERS[key] = Breaker(f"{stage}:{provider}")
    return _BREAKERS[key]


def reset_breakers() -> None:
    """Forget every provider's health (tests, and an operator's reload)."""
    _BREAKERS.clear()

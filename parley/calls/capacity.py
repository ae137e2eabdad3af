"""Admission: whether this worker takes one more call, decided at once at every transport's door.

Past the cap a new call is refused in its protocol's "busy" (HTTP 503 + Retry-After on a carrier's answer webhook,
the talk or media socket closed with 1013, SIP 503 + Retry-After) instead of being taken and degrading every call
already running: an overloaded worker loses calls to keep-alive timeouts and turns go unanswered (issue 15 measured
22 of 50 calls cut at twice a core's capacity). A draining worker and one whose call registry cannot be reached
(Redis down in a multi-worker set-up) refuse the same way, each with its own reason.

A :class:`Slot` is held from the door until the call's record is closed, so the count covers calls still loading
their models and calls writing their last record: what drain (:mod:`parley.calls.drain`) waits for.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import structlog

log = structlog.get_logger(__name__)

#: concurrent calls one core carries at no caller-audible gap on the media path (bench/README.md, load.py: 150 a
#: core with the energy VAD and margin, ~168 estimated with the gated Silero VAD), less headroom for the turns'
#: own work; local STT/LLM models cost far more: set PARLEY_MAX_CALLS from a bench run of your own agents then
CALLS_PER_CORE = 100.0
RETRY_AFTER_S = {"at-capacity": 5, "draining": 30, "registry-unavailable": 5}


@dataclass(frozen=True)
class Busy:
    """Why a call is refused: a short reason (``at-capacity``, ``draining``, ``registry-unavailable``), a
    sentence for the far end, and when to try again."""

    reason: str
    message: str
    retry_after: int

    def sip_headers(self) -> list[tuple[str, str]]:
        """Retry-After, and the reason as a Warning (RFC 3261 section 20.43) a human reading a trace understands."""
        return [("Retry-After", str(self.retry_after)), ("Warning", f'399 parley "{self.reason}"')]


def cores() -> float:
    """The cores this process may use: its CPU affinity, bounded by a cgroup CPU quota (a container's limit)."""
    count = float(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else float(os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return max(count, 1.0)


def default_cap(calls_per_core: float = CALLS_PER_CORE) -> int:
    return max(1, math.floor(cores() * calls_per_core))


class Slot:
    """One admitted call's place; released once (a context manager, or :meth:`release`)."""

    def __init__(self, capacity: Capacity, transport: str) -> None:
        self.capacity = capacity
        self.transport = transport
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self.capacity._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Capacity:
    """This process's call slots: the cap (0: none), the drain flag, and the registry's reachability."""

    def __init__(self) -> None:
        self.limit = 0
        self.draining = False
        self.registry_ok: Callable[[], bool] = lambda: True
        self.refused: Counter[str] = Counter()  # by reason, since start
        self._slots: set[Slot] = set()

    def configure(self, limit: int, registry_ok: Callable[[], bool] | None = None) -> None:
        self.limit, self.draining = limit, False
        self.registry_ok = registry_ok or (lambda: True)
        self._publish()

    @property
    def in_use(self) -> int:
        return len(self._slots)

    def busy(self) -> Busy | None:
        """Why a new call would be refused now; None when one is taken."""
        if self.draining:
            return Busy("draining", "this worker is shutting down: try another", RETRY_AFTER_S["draining"])
        if self.limit and self.in_use >= self.limit:
            return Busy(
                "at-capacity", f"this worker is at its limit of {self.limit} calls", RETRY_AFTER_S["at-capacity"]
            )
        return self.registry_busy()

    def registry_busy(self) -> Busy | None:
        """Why no call is taken while the call registry cannot be reached; None while it can."""
        if self.registry_ok():
            return None
        message = "the call registry (Redis) cannot be reached: no new calls until it is back"
        return Busy("registry-unavailable", message, RETRY_AFTER_S["registry-unavailable"])

    def refusal(self, transport: str, busy: Busy | None = None) -> Busy | None:
        """:meth:`busy` (or ``busy``), with a refusal counted and logged: for a door that turns the call away."""
        busy = busy or self.busy()
        if busy is not None:
            self.refused[busy.reason] += 1
            log.warning("call_refused_busy", transport=transport, reason=busy.reason, in_use=self.in_use)
            refused = _metric("count_refused")  # TODO(M): a refusals counter by transport and reason
            if refused is not None:
                refused(transport, busy.reason)
        return busy

    def take(self, transport: str) -> Slot | Busy:
        """A slot for a new ``transport`` call, or why not (counted and logged)."""
        busy = self.refusal(transport)
        if busy is not None:
            return busy
        slot = Slot(self, transport)
        self._slots.add(slot)
        self._publish()
        return slot

    def _release(self, slot: Slot) -> None:
        self._slots.discard(slot)
        self._publish()

    def start_drain(self) -> None:
        self.draining = True
        self._publish()

    def _publish(self) -> None:
        """The worker's capacity in the metrics (parley.metrics.set_capacity), where that exists."""
        publish = _metric("set_capacity")
        if publish is not None:
            publish(self.limit, self.in_use, self.draining)


def _metric(name: str) -> Callable[..., None] | None:
    from parley import metrics

    found = getattr(metrics, name, None)
    return found if callable(found) else None


#: this process's calls
CAPACITY = Capacity()

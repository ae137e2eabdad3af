"""Process-wide llama.cpp resources shared by every call: CPU-aware thread counts, a FIFO limit on concurrent
model evaluations, and a pool of warm contexts.

Why: on a few shared cores, llama.cpp's OpenMP threads spin at their barriers; when two calls (or another
process) take a core from one of them, a 20-token prompt took seconds instead of 0.1 s. So evaluations queue for
a slot instead of oversubscribing the cores, prompts use a second thread only when a core is actually free, and
the OpenMP runtime is told to sleep rather than spin (``configure_openmp``, before llama.cpp loads). Building a
context costs ~0.6 s (66 MB of KV cache) and prefilling the system prompt another 0.5-1 s, so contexts are kept
warm between calls, truncated to their system prompt when a call returns them (no caller's words survive).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Schedule = Literal["token", "reply"]
_OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}  # sleep at barriers: spinning collapses on a shared core


def configure_openmp(environ: Any = os.environ) -> dict[str, str]:
    """Set OpenMP's wait policy unless the user chose one (or a spin count); libgomp reads it once, at load."""
    if any(k in environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        return {}
    for key, value in _OPENMP_DEFAULTS.items():
        environ[key] = value
    return dict(_OPENMP_DEFAULTS)


def available_cpus() -> int:
    """Cores this process may run on (affinity, cgroup cpusets), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cpus() -> int:
    """Other runnable threads right now (``/proc/loadavg``'s running count, less the caller); 1-min load elsewhere."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        return max(0, running - 1)
    except (OSError, ValueError, IndexError):
        try:
            return int(os.getloadavg()[0])
        except OSError:
            return 0


def batch_threads(configured: int) -> int:
    """Threads for one prompt evaluation: at most ``configured``, and no more than the cores free now."""
    return max(1, min(configured, available_cpus() - busy_cpus()))


def default_concurrency(cpus: int | None = None) -> int:
    """One evaluation per two cores: the other core serves speech recognition and synthesis meanwhile."""
    return max(1, (cpus or available_cpus()) // 2)


class Slots:
    """A FIFO counting semaphore: a releaser that asks again queues behind those already waiting (per-token
    fairness needs that; ``threading.Semaphore`` lets the releasing thread barge), and a waiter gives up when
    its ``stop`` event is set (a barge-in must not wait for someone else's reply)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._free = limit
        self.active = 0
        self.peak = 0  # most holders at once: for tests and benches

    def acquire(self, stop: threading.Event | None = None) -> bool:
        me = object()
        with self._cond:
            self._queue.append(me)
            while self._free <= 0 or self._queue[0] is not me:
                if stop is not None and stop.is_set():
                    self._queue.remove(me)
                    self._cond.notify_all()
                    return False
                self._cond.wait(0.05 if stop is not None else None)
            self._queue.popleft()
            self._free -= 1
            self.active += 1
            self.peak = max(self.peak, self.active)
            self._cond.notify_all()  # the next in line may take another free slot
            return True

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self.active -= 1
            self._cond.notify_all()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Idle:
    llama: Any
    prefix_key: Hashable  # what was prefilled (the system messages), or None


@dataclass
class ContextPool:
    """Idle warm contexts per model key (path and context options), at most ``size`` of each kept."""

    size: int
    _idle: dict[Hashable, list[_Idle]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: Hashable, prefix_key: Hashable = None, *, exact: bool = False) -> tuple[Any, Hashable] | None:
        """An idle context for ``key`` and what it holds, preferring one prefilled with ``prefix_key``; None if
        there is none (or, with ``exact``, none with that prefix)."""
        with self._lock:
            idle = self._idle.get(key, [])
            match = next((i for i in idle if i.prefix_key == prefix_key), None)
            if match is None and (exact or not idle):
                return None
            chosen = match or idle[0]
            idle.remove(chosen)
            return chosen.llama, chosen.prefix_key

    def idle(self, key: Hashable) -> int:
        with self._lock:
            return len(self._idle.get(key, []))

    def give(self, key: Hashable, llama: Any, prefix_key: Hashable, prefix: Sequence[int]) -> bool:
        """Keep ``llama`` for the next call, cut back to ``prefix`` (the prefilled system prompt), so nothing of
        the returning call's conversation stays in its tokens or KV cache; False: the pool is full, close it."""
        keep = common_prefix(llama.input_ids[: llama.n_tokens].tolist(), prefix)
        truncate(llama, keep)
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if any(i.llama is llama for i in idle):  # never twice: two calls would share one context
                return True
            if len(idle) >= self.size:
                return False
            idle.append(_Idle(llama, prefix_key if keep else None))  # its tokens: a prefix of that prompt's
            return True

    def drain(self) -> list[Any]:
        """Forget every idle context and return them (to be closed)."""
        with self._lock:
            out = [i.llama for idle in self._idle.values() for i in idle]
            self._idle.clear()
        return out


def truncate(llama: Any, n: int) -> None:
    """Drop every token after the first ``n`` from the context: its KV cells and its token record."""
    llama._ctx.kv_cache_seq_rm(-1, n, -1)
    llama.input_ids[n:] = 0
    llama.n_tokens = n


@dataclass
class Resources:
    """The process's slots and pool, built from settings on first use."""

    slots: Slots
    pool: ContextPool
    schedule: Schedule


_resources: Resources | None = None
_resources_lock = threading.Lock()


def _from_settings() -> Resources:
    from parley.config import Settings

    settings = Settings()
    limit = settings.llm_concurrency or default_concurrency()
    return Resources(Slots(limit), ContextPool(size=limit + 1), settings.llm_schedule)


def resources(build: Callable[[], Resources] = _from_settings) -> Resources:
    global _resources
    with _resources_lock:
        if _resources is None:
            _resources = build()
        return _resources


def reset(new: Resources | None = None) -> list[Any]:
    """Replace the process's resources (tests); returns the idle contexts of the old pool, to be closed."""
    global _resources
    with _resources_lock:
        old, _resources = _resources, new
    return old.pool.drain() if old is not None else []

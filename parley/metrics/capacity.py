"""The worker's capacity: its call cap, the calls in use and whether it is draining.

The call cap and the drain (``PARLEY_MAX_CALLS``, SIGTERM) call :func:`set_capacity` whenever either changes;
until something has, ``in use`` is this worker's calls in progress (every transport) and the cap reads 0,
meaning none is set. An alert fires when ``in use >= cap`` on every worker (no capacity left anywhere).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from parley.metrics.media import MEDIA
from parley.metrics.registry import REGISTRY


class CapacityCollector(Collector):
    def __init__(self) -> None:
        self.cap = 0
        self.in_use: int | None = None  # None: count the calls in progress
        self.draining = False

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        in_use = MEDIA.live() if self.in_use is None else self.in_use
        yield GaugeMetricFamily("parley_worker_call_cap", "Most calls this worker admits at once (0: no cap set)",
                                value=self.cap)  # fmt: skip
        yield GaugeMetricFamily("parley_worker_calls_in_use", "Calls this worker holds against its cap", value=in_use)
        yield GaugeMetricFamily("parley_worker_draining", "1 while the worker drains (admits no new calls)",
                                value=1 if self.draining else 0)  # fmt: skip


CAPACITY = CapacityCollector()
REGISTRY.register(CAPACITY)


def set_capacity(cap: int, in_use: int | None = None, draining: bool = False) -> None:
    """What the call cap knows: ``cap`` calls at most (0: none), ``in_use`` held now (None: count the calls in
    progress), ``draining`` once SIGTERM stopped admissions."""
    CAPACITY.cap, CAPACITY.in_use, CAPACITY.draining = max(0, cap), in_use, draining


def set_draining(draining: bool = True) -> None:
    CAPACITY.draining = draining

"""Prometheus metrics of the process (``GET /metrics``: ``PARLEY_METRICS_TOKEN`` or ``PARLEY_METRICS_ALLOW``).

One registry (:mod:`parley.metrics.registry`), its families by concept: providers (requests, latency, a fallback
chain's events), calls (active, started, ended, turn stage latencies, interruptions, tools, recordings), media
(the playout's late frames, read at scrape time), capacity (cap, in use, draining) and http (requests by route,
rate-limit refusals, the event loop's lag, who may scrape). deploy/README.md says what each family means.
"""

from parley.metrics.calls import CallWatch, count_refused, end_reason, recording_failed
from parley.metrics.capacity import set_capacity, set_draining
from parley.metrics.http import (
    HttpMetricsMiddleware,
    rate_limited,
    scrape_refusal,
    start_loop_monitor,
    stop_loop_monitor,
)
from parley.metrics.providers import instrument, observe_chain_event
from parley.metrics.registry import REGISTRY, configure, enabled, exposition

__all__ = [
    "REGISTRY",
    "CallWatch",
    "HttpMetricsMiddleware",
    "configure",
    "count_refused",
    "enabled",
    "end_reason",
    "exposition",
    "instrument",
    "observe_chain_event",
    "rate_limited",
    "recording_failed",
    "scrape_refusal",
    "set_capacity",
    "set_draining",
    "start_loop_monitor",
    "stop_loop_monitor",
]

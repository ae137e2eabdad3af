"""The one registry Parley exports, the switch that turns collection off, and the helpers that bound labels.

Not the client's global default registry: what ``GET /metrics`` shows is exactly what parley.metrics declares.
Every label value comes from a closed set the code knows (a stage, a transport, a provider's registered name, a
route template, an end reason folded to its kind) or is folded into ``other``: never a call id, a tenant, a
caller's number or a raw path, so a scrape reveals no one and the series count stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

#: latency buckets (seconds) that resolve 50 ms from 100 ms to 800 ms: the 550 ms voice-to-voice target and the
#: 800 ms p95 budget fall on bucket edges, so histogram_quantile is exact enough to alert on
LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
    0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
#: shorter things (the event loop's lag, HTTP handlers, playout lateness)
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5)
OTHER = "other"


class _State:
    """Process-wide switches, set once by :func:`configure` when the app is made."""

    enabled = True
    #: how many distinct agent names get a label of their own (the rest are ``other``)
    agent_labels = 20


STATE = _State()


def configure(*, enabled: bool = True, agent_labels: int = 20) -> None:
    """``enabled=False`` (``PARLEY_METRICS_ENABLED=false``): nothing on the media path observes anything, so
    bench/load.py can measure what metrics cost; the families still exist (at zero)."""
    STATE.enabled = enabled
    STATE.agent_labels = max(0, agent_labels)


def enabled() -> bool:
    return STATE.enabled


def bounded(value: str, known: Iterable[str], other: str = OTHER) -> str:
    """``value`` when it is one of ``known``, else ``other``: a label that cannot grow with its input."""
    return value if value in known else other


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)

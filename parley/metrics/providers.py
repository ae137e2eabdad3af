"""Prometheus metrics of the process (``GET /metrics`` with the operator's ``PARLEY_METRICS_TOKEN``).

One registry, not the client's global default: what Parley exports is exactly what is declared here. Labels are
providers and stages, never tenants or callers (a scrape must not reveal who calls whom).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

PROVIDER_ERRORS = Counter(
    "parley_provider_errors_total", "Provider failures by stage, provider and kind", ["stage", "provider", "kind"],
    registry=REGISTRY,
)  # fmt: skip
PROVIDER_SWITCHES = Counter(
    "parley_provider_switches_total", "Fallback switches from one provider to the next", ["stage", "from", "to"],
    registry=REGISTRY,
)  # fmt: skip
PROVIDER_PROBES = Counter(
    "parley_provider_probes_total", "Synthetic half-open probes", ["stage", "provider", "ok"], registry=REGISTRY
)
BREAKER_STATE = Gauge(
    "parley_provider_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open, 3 disabled",
    ["stage", "provider"], registry=REGISTRY,
)  # fmt: skip
FALLBACK_SERVED = Counter(
    "parley_provider_fallback_served_total", "Requests a fallback link served", ["stage", "provider"],
    registry=REGISTRY,
)  # fmt: skip
_STATES = {"closed": 0, "half-open": 1, "open": 2, "disabled": 3}


def observe_chain_event(event: dict[str, Any]) -> None:
    """A fallback chain's event as metrics (the same event goes on the call's record)."""
    kind, stage, provider = event.get("type"), str(event.get("stage", "")), str(event.get("provider", ""))
    if kind == "provider_error":
        PROVIDER_ERRORS.labels(stage, provider, str(event.get("kind", ""))).inc()
    elif kind == "provider_switch":
        PROVIDER_SWITCHES.labels(stage, str(event.get("previous", "")), provider).inc()
    elif kind == "probe":
        PROVIDER_PROBES.labels(stage, provider, "true" if event.get("ok") else "false").inc()
    elif kind == "breaker" and str(event.get("state")) in _STATES:
        BREAKER_STATE.labels(stage, provider).set(_STATES[str(event["state"])])
    elif kind == "served":
        FALLBACK_SERVED.labels(stage, provider).inc()


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)

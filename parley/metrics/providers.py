"""Provider metrics: every STT, LLM and TTS request by provider (outcome, time to first output), and a fallback
chain's errors, switches, probes and breaker states.

The choke point is :meth:`parley.services.registry.Registry.register`, which every provider class passes: it hands
the class to :func:`instrument`, which wraps the request methods (``transcribe``/``stream`` for STT, ``stream``
for an LLM, ``synthesize`` for TTS) once. A chain's wrapper (FallbackTTS …) is not registered, so each link's own
requests are counted under its own name and nothing twice. With collection off the wrapper hands back the
provider's own generator: no extra layer per chunk.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from parley.metrics.registry import LATENCY_BUCKETS, REGISTRY, STATE

PROVIDER_REQUESTS = Counter(
    "parley_provider_requests_total",
    "Provider requests by stage, provider and outcome (ok, error, cancelled: closed early by a barge-in or a deadline)",
    ["stage", "provider", "outcome"], registry=REGISTRY,
)  # fmt: skip
PROVIDER_LATENCY = Histogram(
    "parley_provider_latency_seconds",
    "Time to a provider's first output: the transcript (batch STT), the first token (LLM), the first audio (TTS)",
    ["stage", "provider"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
PROVIDER_ERRORS = Counter(
    "parley_provider_errors_total", "Provider failures a fallback chain saw, by stage, provider and kind",
    ["stage", "provider", "kind"], registry=REGISTRY,
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

#: the request methods of each kind of provider, and whether their first output is a latency worth recording
#: (a streaming recognizer's first event waits on the caller's speech, not on the provider)
_METHODS: dict[str, dict[str, bool]] = {
    "stt": {"transcribe": True, "stream": False},
    "llm": {"stream": True},
    "tts": {"synthesize": True},
}
_MARK = "__parley_metered__"


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


def instrument(kind: str, cls: type) -> None:
    """Wrap ``cls``'s request methods (those of its provider ``kind``) so each request is counted and timed under
    ``cls.provider_name``; a method already wrapped (inherited from a registered class) is left as it is."""
    for name, timed in _METHODS.get(kind, {}).items():
        method = getattr(cls, name, None)
        if method is None or getattr(method, _MARK, False) or getattr(method, "__isabstractmethod__", False):
            continue
        make = _coroutine if inspect.iscoroutinefunction(method) else functools.partial(_generator, timed=timed)
        wrapped = make(kind, method)
        setattr(wrapped, _MARK, True)
        setattr(cls, name, wrapped)


def _coroutine(kind: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def metered(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not STATE.enabled:
            return await method(self, *args, **kwargs)
        provider, started, outcome = _name(self), time.perf_counter(), "error"
        try:
            result = await method(self, *args, **kwargs)
            outcome = "ok"
            PROVIDER_LATENCY.labels(kind, provider).observe(time.perf_counter() - started)
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            PROVIDER_REQUESTS.labels(kind, provider, outcome).inc()

    return metered


def _generator(kind: str, method: Callable[..., Any], *, timed: bool) -> Callable[..., Any]:
    @functools.wraps(method)
    def metered(self: Any, *args: Any, **kwargs: Any) -> Any:
        pieces = method(self, *args, **kwargs)
        if not STATE.enabled:
            return pieces
        return _counted(kind, _name(self), pieces, timed)

    return metered


async def _counted(kind: str, provider: str, pieces: AsyncIterator[Any], timed: bool) -> AsyncIterator[Any]:
    """``pieces`` passed through, its first piece timed and its end counted (closing this closes ``pieces``)."""
    started, first, outcome = time.perf_counter(), timed, "cancelled"
    try:
        async with aclosing(pieces):  # type: ignore[type-var]
            async for piece in pieces:
                if first:
                    first = False
                    PROVIDER_LATENCY.labels(kind, provider).observe(time.perf_counter() - started)
                yield piece
        outcome = "ok"
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException:
        outcome = "error"
        raise
    finally:
        PROVIDER_REQUESTS.labels(kind, provider, outcome).inc()


def _name(provider: Any) -> str:
    return str(getattr(provider, "provider_name", None) or type(provider).__name__)

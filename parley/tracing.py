"""OpenTelemetry traces, optional: each call a trace, each turn a span, each turn stage a span under it.

On when ``PARLEY_OTEL_ENDPOINT`` (an OTLP/HTTP base URL such as ``http://collector:4318``, or the full
``…/v1/traces``) or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set
and the ``otel`` extra is installed; an endpoint set without the extra is said once in the log, nothing otherwise.

The spans are made from the turn's recorded times (the call record's ``times``, seconds on the call clock) when
the turn is complete, at the place the per-stage histograms are observed (parley.metrics.calls.CallWatch), with
those times as their start and end: nothing is timed on the media path, and the SDK's BatchSpanProcessor exports
from its own thread. Spans carry the call id, tenant, agent, transport and turn (metric labels never do).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger(__name__)

STANDARD_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACES_PATH = "/v1/traces"
#: span name -> (from, to): keys of a turn record's ``times`` (as parley.metrics.calls.STAGES, plus end_of_turn)
STAGE_SPANS = {
    "end_of_turn": ("speech_end", "end_of_turn"),
    "pause_detect": ("speech_end", "stt_start"),
    "stt": ("stt_start", "stt_final"),
    "llm_first_token": ("stt_final", "llm_first_token"),
    "tts_first_audio": ("llm_first_token", "tts_first_audio"),
    "playout": ("tts_first_audio", "first_audio_out"),
}
_VAD_KEPT = 8  # pauses remembered per call, waiting for their turn to complete

_tracer: Any = None  # opentelemetry.trace.Tracer once started
_provider: Any = None
_warned = False


def endpoint(configured: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """Where traces go: ``configured`` (Settings.otel_endpoint, PARLEY_OTEL_ENDPOINT; ``/v1/traces`` added to a
    base URL), else the standard variables' (the exporter reads those itself: ``""``), else None (tracing off)."""
    env = os.environ if env is None else env
    own = (configured or "").strip().rstrip("/")
    if own:
        return own if own.endswith(TRACES_PATH) else own + TRACES_PATH
    return "" if any((env.get(name) or "").strip() for name in STANDARD_ENVS) else None


def start_tracing(worker_id: str, configured: str | None, env: Mapping[str, str] | None = None) -> bool:
    """Set the exporter up when an endpoint is configured and the extra installed; True when traces will go out."""
    global _tracer, _provider, _warned
    target = endpoint(configured, env)
    if target is None or _tracer is not None:
        return _tracer is not None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        if _warned:
            return False
        _warned = True
        log.warning(
            "tracing_unavailable",
            why="an OTLP endpoint is set but the otel extra is not installed: pip install 'parley[otel]'",
        )
        return False
    from parley import __version__

    resource = Resource.create({"service.name": "parley", "service.version": __version__,
                                "service.instance.id": worker_id})  # fmt: skip
    _provider = TracerProvider(resource=resource)  # our own: not the process-wide one a library may set
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=target or None)))
    _tracer = _provider.get_tracer("parley")
    log.info("tracing_started", endpoint=target.split("@")[-1] or "from OTEL_EXPORTER_OTLP_*")
    return True


async def stop_tracing() -> None:
    """Export what is queued and stop (off the event loop: an unreachable collector takes its timeout)."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if provider is not None:
        await asyncio.to_thread(provider.shutdown)


def call_trace(
    call_id: object, tenant: object, agent: str, transport: str, now: Callable[[], float]
) -> CallTrace | None:
    """The call's trace, or None when tracing is off."""
    if _tracer is None:
        return None
    attrs = {"parley.call_id": str(call_id), "parley.tenant_id": str(tenant), "parley.agent": agent,
             "parley.transport": transport}  # fmt: skip
    return CallTrace(_tracer, attrs, now)


class CallTrace:
    """One call's spans. ``now`` is the call clock: call time ``t`` is wall time ``zero + t``."""

    def __init__(self, tracer: Any, attributes: dict[str, str], now: Callable[[], float]) -> None:
        self._tracer = tracer
        self._attrs = attributes
        self._now = now
        self._zero_ns: int | None = None
        self._call: Any = None
        self._vad: dict[float, tuple[float, float]] = {}  # speech_end -> (decided at, lag)

    def _ns(self, t: float) -> int:
        if self._zero_ns is None:
            self._zero_ns = time.time_ns() - round(self._now() * 1e9)
        return self._zero_ns + round(t * 1e9)

    def _root(self) -> Any:
        if self._call is None:
            self._call = self._tracer.start_span("call", start_time=self._ns(0.0), attributes=self._attrs)
        return self._call

    def paused(self, speech_end: float, decided_at: float, lag: float) -> None:
        """The VAD heard a pause (parley.pipeline.frames.SpeechStopped): its lag joins the turn it ends."""
        self._vad[round(speech_end, 6)] = (decided_at, lag)
        while len(self._vad) > _VAD_KEPT:
            self._vad.pop(next(iter(self._vad)))

    def turn(self, turn: int, times: Mapping[str, float]) -> None:
        """A complete turn: a ``turn`` span over its recorded times, a child span per stage it went through."""
        if not times:
            return
        from opentelemetry import trace

        attrs = {**self._attrs, "parley.turn": turn}
        start = times.get("speech_start", min(times.values()))
        end = max(times.values())
        span = self._tracer.start_span("turn", context=trace.set_span_in_context(self._root()),
                                       start_time=self._ns(start), attributes=attrs)  # fmt: skip
        inside = trace.set_span_in_context(span)
        vad = self._vad.pop(round(times["speech_end"], 6), None) if "speech_end" in times else None
        stages = [("vad_lag", vad[0], vad[0] + vad[1])] if vad is not None else []
        stages += [(name, times[a], times[b]) for name, (a, b) in STAGE_SPANS.items() if a in times and b in times]
        for name, a, b in stages:
            stage = self._tracer.start_span(name, context=inside, start_time=self._ns(a), attributes=attrs)
            stage.end(end_time=self._ns(max(a, b)))
        span.end(end_time=self._ns(max([end, *(b for _, _, b in stages)])))

    def ended(self, reason: str) -> None:
        """The call is over: its span ends now (one trace per call, even one without a turn)."""
        call = self._root()
        call.set_attribute("parley.end_reason", reason[:64])
        call.end(end_time=self._ns(self._now()))

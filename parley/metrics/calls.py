"""Call metrics: calls active, started, ended and refused; each complete turn's stage latencies; interruptions;
tool calls; the playout's lateness; recording upload failures; the worker's capacity.

Every transport's call runs through :class:`parley.calls.live.LiveCall`, which makes one :class:`CallWatch` and
puts :meth:`CallWatch.observe` on its pipeline's observers: that is the one place a turn's record is complete
(the upstream :class:`AgentSpoke` that also closes the turn in parley.calls.record_writer), so the latencies here
are the call record's own. Labels: transport (a code-defined name), agent (bounded: the first
``PARLEY_METRICS_AGENT_LABELS`` distinct agent names this process sees, the rest ``other``), end reason (folded
to its kind), stage, outcome. Never a call id, a tenant or a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from parley.metrics.media import MEDIA, Playout
from parley.metrics.registry import FAST_BUCKETS, LATENCY_BUCKETS, OTHER, REGISTRY, STATE
from parley.pipeline.frames import AgentSpoke, CallEvent, Direction, EndReason, Frame, Interruption, SpeechStopped
from parley.tracing import CallTrace

CALLS_ACTIVE = Gauge("parley_calls_active", "Calls in progress on this worker", ["transport", "agent"],
                     registry=REGISTRY)  # fmt: skip
CALLS_STARTED = Counter("parley_calls_started_total", "Calls started", ["transport"], registry=REGISTRY)
CALLS_ENDED = Counter("parley_calls_ended_total", "Calls ended, by end reason (folded to its kind)",
                      ["transport", "reason"], registry=REGISTRY)  # fmt: skip
CALLS_REFUSED = Counter(
    "parley_calls_refused_total", "Calls refused before they started (at-capacity, draining, registry-unavailable)",
    ["transport", "reason"], registry=REGISTRY,
)  # fmt: skip
CALL_DURATION = Histogram("parley_call_duration_seconds", "Length of ended calls", ["transport"],
                          buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY)  # fmt: skip
VOICE_TO_VOICE = Histogram(
    "parley_voice_to_voice_seconds", "End of the caller's speech (as the VAD heard it) to the first agent audio out",
    ["transport"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
TURN_STAGE = Histogram(
    "parley_turn_stage_seconds",
    "Per-stage latency of complete turns: vad_lag, pause_detect, stt, llm_first_token, tts_first_audio, playout",
    ["stage"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
INTERRUPTIONS = Counter("parley_interruptions_total", "Callers barging in over the agent", ["transport"],
                        registry=REGISTRY)  # fmt: skip
TOOL_CALLS = Counter("parley_tool_calls_total", "Tool calls by outcome (ok, or the error's kind)", ["outcome"],
                     registry=REGISTRY)  # fmt: skip
TOOL_DURATION = Histogram("parley_tool_call_duration_seconds", "Tool call duration", buckets=LATENCY_BUCKETS,
                          registry=REGISTRY)  # fmt: skip
PLAYOUT_MAX_LATENESS = Histogram(
    "parley_playout_max_lateness_seconds", "Per ended call: the latest any agent audio frame left after its slot",
    ["transport"], buckets=FAST_BUCKETS, registry=REGISTRY,
)  # fmt: skip
RECORDING_FAILURES = Counter(
    "parley_recording_upload_failures_total", "Recording writes or uploads to the blob store that failed",
    ["step"], registry=REGISTRY,
)  # fmt: skip

#: stage name -> (from, to): the keys of a turn record's ``times`` (parley.pipeline.frames.Stage), as bench/latency.py
STAGES = {
    "pause_detect": ("speech_end", "stt_start"),
    "stt": ("stt_start", "stt_final"),
    "llm_first_token": ("stt_final", "llm_first_token"),
    "tts_first_audio": ("llm_first_token", "tts_first_audio"),
    "playout": ("tts_first_audio", "first_audio_out"),
}
END_REASONS = frozenset({*(str(r) for r in EndReason), "hung_up_by_operator", "worker-drain", "worker-lost",
                         "rtp-timeout", "error", "dial-failed", "stream", "busy"})  # fmt: skip
TOOL_OUTCOMES = frozenset({"ok", "unknown-tool", "not-allowed", "bad-arguments", "timeout", "failed", "http-status",
                           "not-json", "too-large", "blocked-address", "connect", "server-died", "secret"})  # fmt: skip
_agents: dict[str, str] = {}  # agent name -> its label: first come, up to STATE.agent_labels


def end_reason(reason: str) -> str:
    """An end reason as a label: ``error: …`` -> ``error``, ``stream-…`` -> ``stream``, unknown -> ``other``."""
    kind = reason.split(":", 1)[0].strip()
    if kind.startswith("stream-"):
        kind = "stream"
    return kind if kind in END_REASONS else OTHER


def agent_label(name: str) -> str:
    """The agent's label: its name for the first ``agent_labels`` distinct names, then ``other`` (0: all other)."""
    label = _agents.get(name)
    if label is None:
        label = name[:64] if len(_agents) < STATE.agent_labels else OTHER
        if label != OTHER:
            _agents[name] = label
    return label


class CallWatch:
    """One call's metrics, from its start to its end; :meth:`observe` is a pipeline observer."""

    def __init__(
        self,
        transport: str,
        agent: str,
        playout: Playout,
        turn_log: Any,
        now: Callable[[], float],
        trace: CallTrace | None = None,
    ):
        self.transport = transport
        self.agent = agent_label(agent)
        self.playout = playout
        self._turns = turn_log
        self._now = now
        self._seen: set[int] = set()
        self._started = 0.0
        self.enabled = STATE.enabled
        self.trace = trace  # parley.tracing: the same turns as spans, when an OTLP endpoint is configured

    @property
    def observers(self) -> tuple[Callable[[Frame, Direction], None], ...]:
        """What the call's pipeline should call with every frame (nothing when collection is off)."""
        return (self.observe,) if self.enabled or self.trace is not None else ()

    def started(self) -> None:
        if not self.enabled:
            return
        self._started = time.monotonic()
        CALLS_STARTED.labels(self.transport).inc()
        CALLS_ACTIVE.labels(self.transport, self.agent).inc()
        MEDIA.add(self)

    def ended(self, reason: str) -> None:
        if self.trace is not None:
            self.trace.ended(reason)
        if not self.enabled or not self._started:
            return
        self._started, duration = 0.0, time.monotonic() - self._started
        CALLS_ACTIVE.labels(self.transport, self.agent).dec()
        CALLS_ENDED.labels(self.transport, end_reason(reason)).inc()
        CALL_DURATION.labels(self.transport).observe(duration)
        PLAYOUT_MAX_LATENESS.labels(self.transport).observe(self.playout.max_lateness)
        MEDIA.discard(self)

    def observe(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, AgentSpoke):
            if direction is Direction.UPSTREAM:
                self._turn(frame.turn_id)
        elif isinstance(frame, SpeechStopped):
            # how far behind the caller's audio the VAD's decision came (``t`` is the audio time it was made at)
            lag = max(0.0, self._now() - frame.t)
            if self.enabled:
                TURN_STAGE.labels("vad_lag").observe(lag)
            if self.trace is not None:
                self.trace.paused(frame.speech_end, frame.t, lag)
        elif not self.enabled:
            return
        elif isinstance(frame, Interruption) and type(frame) is Interruption:
            INTERRUPTIONS.labels(self.transport).inc()
        elif isinstance(frame, CallEvent) and frame.event.get("type") == "tool":
            event = frame.event
            outcome = "ok" if event.get("ok") else str(event.get("error", ""))
            TOOL_CALLS.labels(outcome if outcome in TOOL_OUTCOMES else OTHER).inc()
            TOOL_DURATION.observe(float(event.get("duration_ms") or 0.0) / 1000)

    def _turn(self, turn_id: int) -> None:
        """A turn's record is complete: its stage latencies and voice-to-voice, once per turn."""
        record = self._turns.turns.get(turn_id)
        if record is None or turn_id in self._seen:
            return
        self._seen.add(turn_id)
        times: dict[str, float] = record.times
        if self.trace is not None:
            self.trace.turn(turn_id, times)
        if not self.enabled:
            return
        for stage, (start, end) in STAGES.items():
            if start in times and end in times:
                TURN_STAGE.labels(stage).observe(max(0.0, times[end] - times[start]))
        v2v = record.voice_to_voice
        if v2v is not None:
            VOICE_TO_VOICE.labels(self.transport).observe(max(0.0, v2v))


REFUSALS = frozenset({"at-capacity", "draining", "registry-unavailable"})


def count_refused(transport: str, reason: str) -> None:
    """A call turned away before it started (parley.calls.capacity: at its cap, draining, no call registry)."""
    CALLS_REFUSED.labels(transport[:32], reason if reason in REFUSALS else OTHER).inc()


def recording_failed(step: str) -> None:
    """A recording write or upload to the blob store failed (``write`` during the call, ``close`` at its end)."""
    RECORDING_FAILURES.labels(step if step in ("write", "close") else OTHER).inc()

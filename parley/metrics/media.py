"""The playout's counts as metrics, read at scrape time: nothing is added to the 20 ms media path.

:class:`parley.transports.playout.Playout` already counts every agent speech frame it sends and those that left
more than one frame period after their slot (``late_frames``: a listener with a small jitter buffer hears a gap
there, the caller-audible gap). A scrape sums those counters over the calls in progress, plus what ended calls
left behind, so the totals are monotonic counters and a call of ten minutes shows up while it runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from parley.metrics.registry import REGISTRY


class Playout(Protocol):
    speech_frames: int
    late_frames: int
    max_lateness: float


class Watched(Protocol):
    transport: str
    playout: Playout


class MediaCollector(Collector):
    """Speech frames and late frames by transport: live calls' playouts plus the ended calls' totals."""

    def __init__(self) -> None:
        self._live: set[Watched] = set()
        self._frames: Counter[str] = Counter()
        self._late: Counter[str] = Counter()

    def add(self, call: Watched) -> None:
        self._live.add(call)

    def discard(self, call: Watched) -> None:
        """The call ended: its counts join the totals (in the same event-loop step, so no scrape sees a dip)."""
        if call in self._live:
            self._live.discard(call)
            self._frames[call.transport] += call.playout.speech_frames
            self._late[call.transport] += call.playout.late_frames

    def live(self) -> int:
        """Calls in progress on this worker (every transport)."""
        return len(self._live)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(Counter(), Counter()))

    def collect(self) -> Iterator[Metric]:
        frames, late = Counter(self._frames), Counter(self._late)
        for call in list(self._live):
            frames[call.transport] += call.playout.speech_frames
            late[call.transport] += call.playout.late_frames
        return iter(self._families(frames, late))

    @staticmethod
    def _families(frames: Counter[str], late: Counter[str]) -> list[Metric]:
        out = CounterMetricFamily(
            "parley_playout_speech_frames", "Agent speech frames (20 ms) sent to callers", labels=["transport"]
        )
        gaps = CounterMetricFamily(
            "parley_playout_late_frames",
            "Agent speech frames that left more than one frame period after their slot: caller-audible gaps",
            labels=["transport"],
        )
        for transport in sorted(frames.keys() | late.keys()):
            out.add_metric([transport], frames[transport])
            gaps.add_metric([transport], late[transport])
        return [out, gaps]


MEDIA = MediaCollector()
REGISTRY.register(MEDIA)

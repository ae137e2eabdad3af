"""Smart Turn v3.2: P(the caller has finished their turn) from the sound of the last 8 s.

Silence alone cannot tell "I'd like to book for… next Tuesday" from "Saturday,
please": the model hears intonation and the shape of the phrase. It is Daily's
BSD-2 int8 ONNX model (~8.7 MB, 23 languages), copied out of the pipecat-ai wheel
at install time by ``scripts/install-smart-turn.sh`` into
``$VENV/share/parley/smart-turn/`` (``PARLEY_SMART_TURN_MODEL`` names another
file); nothing is downloaded at run time and no other framework is imported.

One inference costs ~45–70 ms of CPU (~95 ms on a busy machine), too long for the
event loop (every call's audio runs there), so it runs on model threads
(``PARLEY_SMART_TURN_THREADS``, default 2) fed by a queue shared by every call: a
pause the caller ended before a thread reached it (they spoke again, the judge
cancelled) costs nothing, and requests waiting together may run as one ONNX batch
(at most ``PARLEY_SMART_TURN_BATCH``, default 1: on this int8 model a batch of 2–8
costs 10–25 % more per item than single runs, measured). A request that fails (its
audio, or its run) fails alone; the judge falls back to silence. The session uses
one thread that does not spin, so it never fights the other models for the cores.
``PARLEY_SMART_TURN_STATS`` names a JSON file the threads rewrite (at most once a
second) with their counters (requests, inferences, dropped, CPU seconds), for benches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime
import structlog

from parley.audio import pcm16_to_float, resample
from parley.services.turn.features import RATE, last_window, log_mel

log = structlog.get_logger(__name__)

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
_lock = threading.Lock()
_shared: SmartTurn | None = None
THREADS = max(1, int(os.environ.get("PARLEY_SMART_TURN_THREADS", "2")))  # model threads per process
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="smart-turn")


def model_path() -> Path:
    """Where the install put the model (or ``PARLEY_SMART_TURN_MODEL``)."""
    env = os.environ.get("PARLEY_SMART_TURN_MODEL")
    path = Path(env) if env else Path(sys.prefix) / "share" / "parley" / "smart-turn" / MODEL_FILE
    if not path.is_file():
        raise RuntimeError(
            f"the Smart Turn model is missing ({path}): run `make install` (scripts/install-smart-turn.sh) "
            "or set the agent's turn.detector to silence"
        )
    return path


@dataclass(eq=False)
class _Request:
    pcm: bytes
    sample_rate: int
    future: concurrent.futures.Future[float] = field(default_factory=concurrent.futures.Future)


@dataclass
class Stats:
    """What the model thread did: requests in, inferences run, requests dropped because nobody waited."""

    requests: int = 0
    inferences: int = 0
    batches: int = 0
    dropped: int = 0
    failed: int = 0
    cpu_s: float = 0.0


class SmartTurn:
    """The loaded model; :meth:`probability` and :meth:`probabilities` are thread-safe."""

    def __init__(self, path: Path | None = None, max_batch: int | None = None) -> None:
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(path or model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.max_batch = max(1, max_batch or int(os.environ.get("PARLEY_SMART_TURN_BATCH", "1")))
        self._queue: deque[_Request] = deque()
        self._queue_lock = threading.Lock()
        self._drainers = 0  # model threads taking from the queue now (at most THREADS)
        self.stats = Stats()
        self._stats_path = os.environ.get("PARLEY_SMART_TURN_STATS")
        self._stats_written = 0.0

    def probability(self, samples: npt.NDArray[np.float32]) -> float:
        """P(turn complete) for 16 kHz float audio ending now (only the last 8 s are heard)."""
        return self.probabilities([samples])[0]

    def probabilities(self, batch: list[npt.NDArray[np.float32]]) -> list[float]:
        """:meth:`probability` of each 16 kHz clip, in one ONNX run (the model has a batch dimension)."""
        features = np.stack([log_mel(last_window(s)) for s in batch])
        out = self._session.run(None, {self._input: features})
        return [float(p) for p in np.asarray(out[0]).reshape(len(batch), -1)[:, 0]]

    def probability_pcm(self, pcm: bytes, sample_rate: int) -> float:
        """:meth:`probability` of PCM16 at any rate (resampled to 16 kHz)."""
        return self.probability(clip(pcm, sample_rate))

    async def predict(self, pcm: bytes, sample_rate: int) -> float:
        """:meth:`probability_pcm` on the model thread, batched with other calls' requests waiting there."""
        t0 = time.perf_counter()
        request = _Request(pcm, sample_rate)
        with self._queue_lock:
            self._queue.append(request)
            self.stats.requests += 1
            start = self._drainers < THREADS
            self._drainers += start
        if start:
            _pool.submit(self._drain)
        try:
            p = await asyncio.wrap_future(request.future)  # cancelling this cancels the request, if not yet run
        except asyncio.CancelledError:
            with self._queue_lock:  # the caller spoke again: the request leaves the queue now
                if request in self._queue:
                    self._queue.remove(request)
                    self.stats.dropped += 1
            raise
        log.debug("smart_turn", p=round(p, 3), ms=round((time.perf_counter() - t0) * 1000, 1))
        return p

    # --- the model thread --------------------------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            with self._queue_lock:
                taken = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                if not taken:
                    self._drainers -= 1
                    return
            live = [r for r in taken if r.future.set_running_or_notify_cancel()]
            self.stats.dropped += len(taken) - len(live)
            t0 = time.thread_time()  # this thread's CPU: what the inferences cost, however busy the machine
            try:
                self._run(live)
            except Exception as exc:  # a bug here must not stop the thread: the queue would wait forever
                log.exception("smart_turn_drain_failed")
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(exc)
            self.stats.cpu_s += time.thread_time() - t0
            self._write_stats()

    def _run(self, requests: list[_Request]) -> None:
        """Each request's probability, or its own error: bad audio fails only its request."""
        clips: list[tuple[_Request, npt.NDArray[np.float32]]] = []
        for r in requests:
            try:
                clips.append((r, clip(r.pcm, r.sample_rate)))
            except Exception as exc:
                self.stats.failed += 1
                r.future.set_exception(exc)
        if not clips:
            return
        try:
            results = self.probabilities([c for _, c in clips])
            self.stats.batches += 1
        except Exception as exc:
            if len(clips) > 1:  # run them one by one, so the one that fails fails alone
                for r, _ in clips:
                    self._run_one(r)
                return
            self.stats.failed += 1
            clips[0][0].future.set_exception(exc)
            return
        self.stats.inferences += len(clips)
        for (r, _), p in zip(clips, results, strict=True):
            r.future.set_result(p)

    def _run_one(self, r: _Request) -> None:
        try:
            p = self.probability_pcm(r.pcm, r.sample_rate)
        except Exception as exc:
            self.stats.failed += 1
            r.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.inferences += 1
        r.future.set_result(p)

    def _write_stats(self) -> None:
        now = time.monotonic()
        if self._stats_path and now - self._stats_written >= 1.0:
            self._stats_written = now
            tmp = f"{self._stats_path}.tmp"
            try:
                Path(tmp).write_text(json.dumps(self.stats.__dict__))
                os.replace(tmp, self._stats_path)
            except OSError as exc:
                log.warning("smart_turn_stats_unwritable", error=str(exc))
                self._stats_path = None


def clip(pcm: bytes, sample_rate: int) -> npt.NDArray[np.float32]:
    """The last 8 s (and a little) of PCM16 at ``sample_rate`` as 16 kHz float: what the model hears."""
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, not {sample_rate}")
    samples = pcm16_to_float(pcm[-(sample_rate * 8 * 2 + 64) :])
    return resample(samples, sample_rate, RATE) if sample_rate != RATE else samples


def shared() -> SmartTurn:
    """The process-wide model, loaded on first use (~0.1 s)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = SmartTurn()
        return _shared

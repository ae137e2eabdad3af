"""Silero windows of many calls in one ONNX run: the batch dimension across streams.

One ``session.run`` costs ~190 µs for one 8 kHz window and ~45 µs a window for 32 at
once (onnxruntime's per-run overhead dominates a model this small). Every call's
turn taker submits its window and awaits; the windows submitted during one step of
the event loop run together at the start of the next (``call_soon``), each with its
own recurrent state (the model takes state ``[2, B, 128]``). That adds one loop step
of latency, far below one 32 ms window, and needs no timer, so simulated time is
unaffected. A stream may submit a chain of windows (the gate's lead-in before an
onset): the chains advance together, one batch per step, within the same callback.
The runs are inline: a batch costs ~1–2 ms, less than a thread hop would cost the
callers waiting on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import weakref
from dataclasses import dataclass

import numpy as np
import onnxruntime

_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher] = weakref.WeakKeyDictionary()
#: process-wide: windows the model heard (runs) or the gate skipped, batches run and the windows in them
COUNTS = {"runs": 0, "skips": 0, "batches": 0, "batched": 0}
_STATS_PATH = os.environ.get("PARLEY_VAD_STATS")  # a JSON file of COUNTS, rewritten at most once a second
_written = 0.0


def write_stats() -> None:
    """:data:`COUNTS` to ``PARLEY_VAD_STATS`` (for benches), at most once a second."""
    global _written, _STATS_PATH
    now = time.monotonic()
    if _STATS_PATH is None or now - _written < 1.0:
        return
    _written = now
    try:
        with open(f"{_STATS_PATH}.tmp", "w") as f:
            json.dump(COUNTS, f)
        os.replace(f"{_STATS_PATH}.tmp", _STATS_PATH)
    except OSError:
        _STATS_PATH = None


@dataclass(eq=False)
class _Chain:
    inputs: list[np.ndarray]  # [1, context + window] each, in order
    state: np.ndarray  # [2, 1, 128], advanced as the chain runs
    rate: int
    future: asyncio.Future[tuple[float, np.ndarray]]
    probability: float = 0.0


class Batcher:
    """Collects windows for the current loop step, then runs them per sample rate, one batch per chain step."""

    def __init__(self, session: onnxruntime.InferenceSession, loop: asyncio.AbstractEventLoop) -> None:
        self._session, self._loop = session, loop
        self._chains: list[_Chain] = []

    def submit(
        self, inputs: list[np.ndarray], state: np.ndarray, sample_rate: int
    ) -> asyncio.Future[tuple[float, np.ndarray]]:
        """(probability of the last window, state after it) of one stream's consecutive windows (context first)."""
        if not self._chains:
            self._loop.call_soon(self._flush)
        future: asyncio.Future[tuple[float, np.ndarray]] = self._loop.create_future()
        self._chains.append(_Chain(inputs, state, sample_rate, future))
        return future

    def _flush(self) -> None:
        chains, self._chains = self._chains, []
        step = 0
        while chains:
            for rate in {c.rate for c in chains}:
                self._run(step, [c for c in chains if c.rate == rate], rate)
            chains = [c for c in chains if not c.future.done() and step + 1 < len(c.inputs)]
            step += 1
        # chains that ran out of windows are done; the rest finished or failed in _run

    def _run(self, step: int, chains: list[_Chain], rate: int) -> None:
        try:
            out, states = self._session.run(
                None,
                {
                    "input": np.concatenate([c.inputs[step] for c in chains], axis=0),
                    "state": np.concatenate([c.state for c in chains], axis=1),
                    "sr": np.array(rate, dtype=np.int64),
                },
            )
        except Exception as exc:  # every stream of this batch hears the failure; the next batch is new
            for c in chains:
                if not c.future.done():
                    c.future.set_exception(exc)
            return
        COUNTS["batches"] += 1
        COUNTS["batched"] += len(chains)
        for i, c in enumerate(chains):
            c.state, c.probability = states[:, i : i + 1, :], float(out[i, 0])
            if step + 1 == len(c.inputs) and not c.future.done():  # done, unless the call hung up meanwhile
                c.future.set_result((c.probability, c.state))


def batcher(session: onnxruntime.InferenceSession) -> Batcher:
    """The running loop's batcher for ``session`` (one per loop: futures belong to a loop)."""
    loop = asyncio.get_running_loop()
    b = _batchers.get(loop)
    if b is None or b._session is not session:
        b = _batchers[loop] = Batcher(session, loop)
    return b

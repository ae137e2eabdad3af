"""Silero VAD on onnxruntime, without torch.

The ONNX file comes from the ``silero-vad`` PyPI package (installed with --no-deps:
its declared dependency is torch, which we do not need). One InferenceSession is
shared by every call in the process (onnxruntime sessions are thread-safe); each
:class:`SileroVAD` keeps its own recurrent state and context, so one per stream.

A window is 32 ms (512 samples at 16 kHz, 256 at 8 kHz) and costs ~0.1 ms on one
core, so it runs inline on the event loop: a thread hop would cost more than the
inference itself.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime

from parley.services.registry import ProviderOptions
from parley.services.vad.base import VAD, registry

_session: onnxruntime.InferenceSession | None = None
_lock = threading.Lock()


def model_path() -> Path:
    """Path of ``silero_vad.onnx`` inside the installed package (without importing it: it imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed (pip install --no-deps silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise RuntimeError(f"silero-vad is installed but {path} is missing")
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
    pass


@registry.register("silero")
class SileroVAD(VAD):
    """Per-stream Silero state over the process-wide ONNX session."""

    Options: ClassVar[type[ProviderOptions]] = SileroOptions
    sample_rates: ClassVar[tuple[int, ...]] = (8000, 16000)

    def __init__(self, options: ProviderOptions | None = None) -> None:
        self._session = _shared_session()
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

    def speech_probability(self, window: np.ndarray, sample_rate: int) -> float:
        n = self.window_samples(sample_rate)
        if window.shape[-1] != n:
            raise ValueError(f"Silero VAD needs {n} samples per window at {sample_rate} Hz, got {window.shape[-1]}")
        if sample_rate != self._rate:
            self.reset()
            self._rate = sample_rate
        context = 64 if sample_rate == 16000 else 32
        if self._context.shape[1] == 0:
            self._context = np.zeros((1, context), dtype=np.float32)
        x = np.concatenate([self._context, window.astype(np.float32, copy=False).reshape(1, -1)], axis=1)
        out, self._state = self._session.run(
            None, {"input": x, "state": self._state, "sr": np.array(sample_rate, dtype=np.int64)}
        )
        self._context = x[:, -context:]
        return float(out[0][0])

"""Whisper-style log-mel features, as Smart Turn v3 was trained on (numpy only).

Smart Turn's ONNX graph starts at the spectrogram, so the features must match the
ones it saw in training: the Hugging Face ``WhisperFeatureExtractor`` with an 8 s
window (``chunk_length=8``, ``do_normalize=True``). That means: 16 kHz audio cut or
zero-padded to 128 000 samples, normalised to zero mean and unit variance, a
centred 400-point STFT (periodic Hann window, reflect padding) every 160 samples,
the power spectrum projected on 80 Slaney-normalised mel filters (0–8 kHz),
``log10`` floored at 1e-10, the last frame dropped (800 frames), values clamped to
8 decades below the maximum and mapped by ``(x + 4) / 4``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
SECONDS = 8
N_SAMPLES = RATE * SECONDS
N_FRAMES = N_SAMPLES // HOP  # 800


def _slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Hz → mel on the Slaney scale: linear below 1 kHz, logarithmic above."""
    linear = hz * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz >= 1000.0, log, linear)


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * 200.0 / 3.0
    log = 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0)
    return np.where(mel >= 15.0, log, linear)


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RATE) -> npt.NDArray[np.float64]:
    """Triangular filters, ``[n_mels, n_fft // 2 + 1]``, each scaled to unit area (Slaney norm)."""
    edges = _slaney_hz(np.linspace(_slaney_mel(np.array(0.0)), _slaney_mel(np.array(rate / 2)), n_mels + 2))
    bins = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    tri = np.clip(np.minimum(rising, falling), 0.0, None)
    return tri * (2.0 / (upper - lower))


_FILTERS = mel_filters()
# each filter's non-zero bins (391 of 80 x 201): the projection as 80 short dot products, not one BLAS matrix
# product, which OpenBLAS spreads over helper threads that double the CPU on a busy core (measured)
_BANDS = [(int(nz[0]), int(nz[-1]) + 1) for nz in (np.flatnonzero(f) for f in _FILTERS)]


def _project(power: np.ndarray) -> np.ndarray:
    """``power @ _FILTERS.T`` over the filters' own bins only."""
    out = np.empty((power.shape[0], len(_BANDS)))
    for m, (lo, hi) in enumerate(_BANDS):
        out[:, m] = power[:, lo:hi] @ _FILTERS[m, lo:hi]
    return out


_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann


def last_window(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The last 8 s of ``samples`` (16 kHz float), zero-padded at the front when shorter."""
    x = np.asarray(samples, dtype=np.float32)[-N_SAMPLES:]
    if x.size < N_SAMPLES:
        x = np.concatenate([np.zeros(N_SAMPLES - x.size, dtype=np.float32), x])
    return x


def log_mel(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``[80, 800]`` float32 log-mel features of exactly 8 s of 16 kHz audio (see the module docstring).

    A short utterance is mostly :func:`last_window`'s zero padding: the frames that lie wholly in it are one
    constant frame, whose spectrum is computed once (for a 1.5 s utterance that is 80 % of the frames).
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.shape != (N_SAMPLES,):
        raise ValueError(f"log_mel needs {N_SAMPLES} samples (8 s at 16 kHz), got shape {x.shape}")
    lead = int(np.argmax(x != 0)) if x.any() else N_SAMPLES  # leading zeros
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    # padded[: N_FFT // 2 + lead] is constant when the reflection at the start mirrors only the zeros
    constant = N_FFT // 2 + lead if lead > N_FFT // 2 else 0
    same = min(N_FRAMES + 1, (constant - N_FFT) // HOP + 1) if constant >= N_FFT else 0
    starts = np.arange(same, N_FRAMES + 1) * HOP
    if same:
        starts = np.concatenate([[0], starts])  # one frame stands for all the constant ones
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]]  # [<=801, 400]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=1)  # [<=801, 201]
    mel = np.log10(np.maximum(_project(spectrum.real**2 + spectrum.imag**2), 1e-10))
    if same:
        mel = np.concatenate([np.repeat(mel[:1], same, axis=0), mel[1:]])
    mel = mel.T[:, :N_FRAMES]  # [80, 800]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)

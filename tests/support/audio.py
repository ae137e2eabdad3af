"""Real speech for the tests, from espeak-ng (a Debian package the test set-up installs), and quiet to pad it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from parley.audio import read_wav, resample


def espeak(text: str, voice: str = "en-us", rate: int = 16000, wpm: int = 170) -> np.ndarray:
    """``text`` spoken by espeak-ng, int16 mono at ``rate``."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: `make test` installs it (scripts/install-test-deps.sh)")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(path), "--", text], check=True)
        audio = read_wav(path)
    return resample(audio.mono(), audio.sample_rate, rate) if audio.sample_rate != rate else audio.mono()


def silence(secs: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(secs * rate), dtype=np.int16)


def noise(secs: float, rate: int = 16000, dbfs: float = -30.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amp = 32768 * 10 ** (dbfs / 20)
    return np.clip(rng.normal(0, amp, int(secs * rate)), -32768, 32767).astype(np.int16)

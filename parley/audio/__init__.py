"""Pure numpy audio helpers: G.711 codecs, resampling, framing, levels and WAV I/O.

Self-contained on purpose (nothing from the rest of parley is imported), so transports, services and
tools can all share these functions without import cycles.
"""

from .framing import (
    SAMPLE_WIDTH,
    FrameSplitter,
    duration,
    float_to_pcm16,
    pcm16_to_float,
    samples_per_frame,
    split_frames,
)
from .g711 import (
    alaw_decode,
    alaw_encode,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_pcm16,
)
from .levels import SILENCE_DBFS, mix, peak, rms_dbfs
from .resample import Resampler, pcm16_resample, resample
from .wav import Audio, AudioFormatError, WavWriter, load_audio, read_wav, stereo, wav_header, write_wav

__all__ = [
    "SAMPLE_WIDTH",
    "SILENCE_DBFS",
    "Audio",
    "AudioFormatError",
    "FrameSplitter",
    "Resampler",
    "WavWriter",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_pcm16",
    "duration",
    "float_to_pcm16",
    "load_audio",
    "mix",
    "pcm16_resample",
    "pcm16_to_alaw",
    "pcm16_to_float",
    "pcm16_to_ulaw",
    "peak",
    "read_wav",
    "resample",
    "rms_dbfs",
    "samples_per_frame",
    "split_frames",
    "stereo",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_pcm16",
    "wav_header",
    "write_wav",
]

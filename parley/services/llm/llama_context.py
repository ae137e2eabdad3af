"""llama.cpp loaded with OpenMP's wait policy set first, and a ``Llama`` that can be interrupted and scheduled.

Importing this module is what loads llama.cpp: ``configure_openmp`` must run before, because libgomp reads
``OMP_WAIT_POLICY`` once, when it is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import threading
from collections.abc import Generator, Sequence
from typing import Any

from parley.services.llm import llama_pool

llama_pool.configure_openmp()
import llama_cpp  # noqa: E402
from llama_cpp import Llama, StoppingCriteriaList  # noqa: E402

__all__ = ["EVAL_CHUNK", "Interrupted", "InterruptibleLlama", "Llama", "llama_cpp"]
log = logging.getLogger("parley.services.llm.llama")
EVAL_CHUNK = 64  # prompt tokens per decode: as fast as 512 on CPU, and a barge-in waits for one chunk at most


@llama_cpp.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp logs through one process-wide callback; keep it off stderr, available at DEBUG."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))


def _keep_fds(disable: bool = True) -> contextlib.nullcontext[None]:
    """Stands in for llama-cpp-python's ``suppress_stdout_stderr``, which points fds 1 and 2 at /dev/null while a
    model loads (``verbose=False``): process-wide, so every other thread's log lines in that window were lost.
    llama.cpp's own output comes through ``_llama_log`` above; the fds stay as they are."""
    return contextlib.nullcontext()


for _name in ("llama", "_internals", "llama_chat_format"):  # each took its own reference at import
    _module = importlib.import_module(f"llama_cpp.{_name}")
    if hasattr(_module, "suppress_stdout_stderr"):
        _module.suppress_stdout_stderr = _keep_fds  # type: ignore[attr-defined]


class Interrupted(Exception):
    """Abandons a prompt evaluation from inside llama-cpp-python's token loop."""


class InterruptibleLlama(Llama):
    """``Llama`` that stops within one token (or one prompt chunk) of ``interrupt`` being set.

    ``create_chat_completion`` takes no stopping criteria, so one is added where ``generate`` checks them
    (after each sampled token); prompt evaluation is split into chunks with a check between them.
    """

    interrupt = threading.Event()  # replaced per completion
    token_slots: llama_pool.Slots | None = None  # per-token scheduling: each decode waits for a slot
    max_batch_threads = 1
    _batch_threads = 1

    def eval(self, tokens: Sequence[int]) -> None:
        for i in range(0, len(tokens), EVAL_CHUNK):
            if self.interrupt.is_set():
                raise Interrupted
            chunk = tokens[i : i + EVAL_CHUNK]
            slots = self.token_slots
            if slots is not None and not slots.acquire(self.interrupt):
                raise Interrupted
            try:
                if len(chunk) > 1:
                    self._fit_threads()
                super().eval(chunk)
            finally:
                if slots is not None:
                    slots.release()

    def _fit_threads(self) -> None:
        """A prompt uses a second thread only if a core is free now: a thread without a core stalls them all."""
        n = llama_pool.batch_threads(self.max_batch_threads)
        if n != self._batch_threads:
            llama_cpp.llama_set_n_threads(self._ctx.ctx, self.n_threads, n)
            self._batch_threads = n

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Generator[int, Sequence[int] | None, None]:
        criteria = StoppingCriteriaList([lambda _ids, _logits: self.interrupt.is_set()])
        criteria.extend(kwargs.get("stopping_criteria") or [])
        kwargs["stopping_criteria"] = criteria
        return super().generate(tokens, *args, **kwargs)

"""Process-wide model cache with the worker threads that run the models.

Local models are loaded once per process and shared by every call; their
inference runs on a small dedicated executor (never the event loop, never the
default executor) so a provider can be shut down cleanly, threads included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ModelCache(Generic[K, V]):
    """``key → model``, loaded at most once, plus an executor of ``workers`` named threads."""

    def __init__(self, thread_prefix: str, workers: int) -> None:
        self.thread_prefix = thread_prefix
        self.workers = workers
        self.lock = threading.Lock()
        self._models: dict[K, V] = {}
        self._executor: ThreadPoolExecutor | None = None

    def executor(self) -> ThreadPoolExecutor:
        with self.lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.thread_prefix)
            return self._executor

    def get(self, key: K, load: Callable[[K], V]) -> V:
        """The model for ``key``; ``load`` runs outside the lock (slow) and a racing loader's result is dropped."""
        with self.lock:
            if key in self._models:
                return self._models[key]
        model = load(key)
        with self.lock:
            return self._models.setdefault(key, model)

    def shutdown(self) -> None:
        """Stop the worker threads and forget the models (tests, process exit)."""
        with self.lock:
            executor, self._executor = self._executor, None
            self._models.clear()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

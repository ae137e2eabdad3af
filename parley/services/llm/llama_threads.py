"""The embedded LLM's worker threads and what one generation cost.

Why own threads and not an executor: a barge-in must be able to abandon a generation and move on while its
thread finishes the current token, and a shared pool would queue the next call's work behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

THREAD_PREFIX = "parley-llama"
T = TypeVar("T")


@dataclass(slots=True)
class TurnStats:
    """What one generation cost; ``prompt_tokens_evaluated`` excludes the prefix reused from the KV cache."""

    prompt_tokens_evaluated: int
    prompt_eval_s: float
    generated_tokens: int
    generation_s: float
    first_token_s: float | None
    context_tokens: int
    stopped_early: bool

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.generation_s if self.generation_s > 0 else 0.0


def in_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run ``fn`` on a new named thread; the future settles when it returns (no shared executor)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(result)

    def run() -> None:
        try:
            result, exc = fn(), None
        except BaseException as e:
            result, exc = None, e
        with contextlib.suppress(RuntimeError):  # the event loop is already closed
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=run, name=f"{THREAD_PREFIX}-{name}", daemon=True).start()
    return fut

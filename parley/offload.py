"""The one way Parley runs blocking work off the event loop: ``await off_loop(fn, *args)``.

Before it there were three styles (``asyncio.to_thread``, ``loop.run_in_executor`` on a model's executor, and
``asyncio.wrap_future(executor.submit(...))``), which differed in a way nobody chose: only ``to_thread`` carried
the caller's context variables, so a model thread's log lines lost the call's bound ``call_id``. Here every path
copies the context, and ``on_executor`` names the executor (a model's own threads) when the default will not do.
The result is an asyncio future: cancelling it cancels work that has not started (started work runs to its end).
The embedded LLM's per-generation threads (``llama_threads.in_thread``) stay apart on purpose: a barge-in abandons
a generation while its thread finishes the token it is on.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def on_executor(
    executor: Executor | None, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> asyncio.Future[T]:
    """``fn(*args, **kwargs)`` on ``executor`` (None: the loop's default one), in a copy of the caller's context."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return loop.run_in_executor(executor, functools.partial(context.run, fn, *args, **kwargs))


def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
    """``fn(*args, **kwargs)`` on the default executor: ``asyncio.to_thread``, as a future one may also gather."""
    return on_executor(None, fn, *args, **kwargs)

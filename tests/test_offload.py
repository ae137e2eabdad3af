"""parley.offload: blocking work off the loop, on the default executor or a named one, with the caller's context."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import structlog

from parley.offload import off_loop, on_executor

CALL = contextvars.ContextVar("call", default="none")


def _where(tag: str, *, upper: bool = False) -> tuple[str, str, str]:
    name = threading.current_thread().name
    return (tag.upper() if upper else tag), CALL.get(), name


async def test_the_callers_context_reaches_every_thread() -> None:
    CALL.set("c1")
    structlog.contextvars.bind_contextvars(call_id="c1")
    with ThreadPoolExecutor(1, thread_name_prefix="model") as pool:
        default, named = await asyncio.gather(off_loop(_where, "a", upper=True), on_executor(pool, _where, "b"))
        bound = await on_executor(pool, structlog.contextvars.get_contextvars)
    structlog.contextvars.unbind_contextvars("call_id")
    assert default[:2] == ("A", "c1") and named[:2] == ("b", "c1") and named[2].startswith("model")
    assert bound == {"call_id": "c1"}
    assert threading.current_thread().name not in (default[2], named[2])

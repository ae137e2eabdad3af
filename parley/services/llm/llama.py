"""Embedded LLM on llama-cpp-python, one context per call: Qwen2.5-Coder-Instruct by default (``llama_models``).

Contexts come from a process-wide pool of warm ones and every evaluation waits for a slot (``llama_pool``): a
call answered while another is talking finds its system prompt already in a context, and two calls never
oversubscribe the cores (llama.cpp's threads stall for seconds when they lose one).

Latency notes: weights are mmapped, so every call's ``Llama`` shares one copy in the page cache and a
load costs ~0.2 s. ``create_chat_completion`` keeps the KV cache of the previous evaluation and only
decodes the tokens after the longest common prefix (``Llama.generate``), so on turn N the system
prompt and earlier turns are not re-evaluated; ``warm()`` evaluates the system prompt before the caller
speaks. All llama.cpp work runs on dedicated threads; the event loop only moves text through a queue.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import Field, field_validator

from parley.services.llm import llama_models, llama_pool
from parley.services.llm.base import LLM, LLMError, Message, Tool, ToolCall, registry
from parley.services.llm.llama_context import Interrupted, InterruptibleLlama, Llama, llama_cpp  # sets OpenMP up first
from parley.services.llm.llama_threads import THREAD_PREFIX as THREAD_PREFIX  # re-exported for tests
from parley.services.llm.llama_threads import TurnStats, in_thread
from parley.services.llm.llama_tools import ToolCallSplitter, tool_specs
from parley.services.registry import ProviderOptions

log = logging.getLogger(__name__)

_TEMPLATE_OVERHEAD = 8  # tokens a chat template adds around one message (role markers, newlines)
_DONE = object()
# One load at a time (memory). llama-cpp-python's fd swap during a load is disabled in llama_context (_keep_fds).
_LOAD_LOCK = threading.Lock()


def default_model_path(model: str = llama_models.DEFAULT_MODEL) -> Path:
    """The installed GGUF of a catalogue model or preset (an :class:`LLMError` says how to install it)."""
    return llama_models.model_path(llama_models.spec(model))


def shutdown() -> None:
    """Free the pooled contexts (tests, process exit: at interpreter teardown llama.cpp's bindings are gone)."""
    for llama in llama_pool.reset():
        llama.close()


atexit.register(shutdown)


@registry.register("llama")
class LlamaLLM(LLM):
    """One ``Llama`` (model + KV cache) per call, so each conversation keeps its own prefix cache."""

    class Options(ProviderOptions):
        # a preset (fast, accurate) or a catalogue name (llama_models.MODELS); model_path, if set, wins
        model: str = llama_models.DEFAULT_MODEL
        model_path: str | None = None  # any GGUF file (its chat template is used; sampling: the model's defaults)
        n_ctx: Annotated[int, Field(ge=256)] = 2048
        # One generation thread: generation overlaps TTS (and other calls), and llama.cpp's spinning
        # barriers collapse when a thread loses its core (measured: 20 prompt tokens took 7 s instead of
        # 0.1 s beside Whisper and Piper). Prompt evaluation runs while nothing else does, so it may use two.
        n_threads: Annotated[int, Field(ge=1)] = 1
        n_threads_batch: Annotated[int, Field(ge=1)] = min(2, os.cpu_count() or 1)
        n_batch: Annotated[int, Field(ge=1)] = 512
        n_gpu_layers: int = 0
        temperature: Annotated[float, Field(ge=0)] | None = None  # None: the model's (llama_models)
        top_p: Annotated[float, Field(gt=0, le=1)] = 0.9
        top_k: Annotated[int, Field(ge=0)] = 40
        min_p: Annotated[float, Field(ge=0, le=1)] = 0.05
        max_tokens: Annotated[int, Field(ge=1)] = 120
        repeat_penalty: Annotated[float, Field(gt=0)] | None = None  # None: the model's (SmolLM2 needs 1.1)
        seed: int | None = None
        stop: list[str] | None = None  # None: the model's
        chat_format: str | None = None  # None: the template stored in the GGUF
        tools: bool | None = None  # offer the agent's actions as tools; None: if the model calls them reliably

        @field_validator("model")
        @classmethod
        def _known(cls, v: str) -> str:
            if v not in llama_models.NAMES:
                raise ValueError(f"unknown model {v!r}; one of: {', '.join(llama_models.NAMES)}")
            return v

    def __init__(self, options: Options | None = None) -> None:
        self.options = o = options or self.Options()
        self.model = llama_models.spec(o.model)
        if o.model_path:
            path = Path(o.model_path).expanduser()
            if not path.is_file():
                raise LLMError(f"llama: model file not found: {path}")
            self.model = llama_models.ModelSpec(path.stem, path.name, None)  # neutral sampling, no tools
        else:
            path = llama_models.model_path(self.model)
        self.model_path = path
        self.tools_on = self.supports_tools = self.model.tools if o.tools is None else o.tools
        self.last_stats: TurnStats | None = None
        self.load_s: float | None = None
        self._llama: InterruptibleLlama | None = None
        self._loading: asyncio.Future[InterruptibleLlama] | None = None
        self._busy: asyncio.Future[None] | None = None  # the running generation/warm-up thread
        self._stop = threading.Event()
        self._lock = asyncio.Lock()
        self._closed = False
        self._prefix: list[int] = []  # the tokens warm() prefilled: what the context keeps when pooled again
        self._prefix_key: Hashable = None
        self._pool_key = (
            str(path),
            o.n_ctx,
            min(o.n_batch, o.n_ctx),
            o.n_gpu_layers,
            o.chat_format,
            o.seed,
            o.n_threads,
        )

    def _load(self) -> InterruptibleLlama:
        o = self.options
        with _LOAD_LOCK:
            start = time.perf_counter()
            try:
                llama = InterruptibleLlama(
                    model_path=str(self.model_path),
                    n_ctx=o.n_ctx,
                    n_threads=o.n_threads,
                    n_threads_batch=o.n_threads_batch,
                    n_batch=min(o.n_batch, o.n_ctx),
                    n_gpu_layers=o.n_gpu_layers,
                    chat_format=o.chat_format,
                    seed=llama_cpp.LLAMA_DEFAULT_SEED if o.seed is None else o.seed,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise LLMError(f"llama: cannot load model {self.model_path}: {exc}") from exc
            self.load_s = time.perf_counter() - start
        llama.max_batch_threads = llama._batch_threads = o.n_threads_batch
        return llama

    async def _model(self) -> InterruptibleLlama:
        if self._closed:
            raise LLMError("llama: LLM is closed")
        if self._llama is None:
            taken = llama_pool.resources().pool.take(self._pool_key)
            if taken is not None:
                self._llama, self._prefix_key = taken
                self.load_s = 0.0
                return self._llama
            if self._loading is None or (self._loading.done() and self._loading.exception() is not None):
                self._loading = in_thread(self._load, "load")
            self._llama = await asyncio.shield(self._loading)
        return self._llama

    def _swap_for_warm(self, prefix_key: Hashable) -> None:
        """Trade this call's context for an idle one already prefilled with ``prefix_key``, if the pool has one."""
        if self._llama is None or self._prefix_key == prefix_key:
            return
        pool = llama_pool.resources().pool
        taken = pool.take(self._pool_key, prefix_key, exact=True)
        if taken is not None:
            old, old_key = self._llama, self._prefix_key
            self._llama, self._prefix_key = taken
            untouched = self.last_stats is None  # no turn of this call in it yet: it still holds only its prompt
            if not self._give_back(old, old.input_ids[: old.n_tokens].tolist() if untouched else [], old_key):
                in_thread(old.close, "close")

    def _give_back(self, llama: InterruptibleLlama, prefix: list[int], prefix_key: Hashable) -> bool:
        """Return a context to the pool, cut back to ``prefix``; False if the pool is full (close it)."""
        return llama_pool.resources().pool.give(self._pool_key, llama, prefix_key, prefix)

    async def _idle(self) -> None:
        """Wait for a worker left running by a consumer that was cancelled while it stopped it."""
        if self._busy is not None and not self._busy.done():
            await asyncio.shield(self._busy)

    def _fit(self, llama: Llama, messages: list[Message], tools: list[dict[str, Any]]) -> list[Message]:
        """Drop the oldest turns (never the system prompt or the last message) so prompt + reply fit in n_ctx."""
        budget = llama.n_ctx() - self.options.max_tokens
        if tools:  # the template writes them into the system turn, with ~100 tokens of instructions
            budget -= len(llama.tokenize(json.dumps(tools).encode(), add_bos=False)) + 100
        cost = [len(llama.tokenize(m["content"].encode(), add_bos=False)) + _TEMPLATE_OVERHEAD for m in messages]
        first = 1 if messages and messages[0]["role"] == "system" else 0
        keep = list(range(len(messages)))
        while len(keep) > first + 1 and sum(cost[i] for i in keep) > budget:
            keep.pop(first)
        return [messages[i] for i in keep]

    def _completion(
        self,
        llama: InterruptibleLlama,
        messages: list[Message],
        max_tokens: int,
        stop: threading.Event,
        tools: list[dict[str, Any]],
    ) -> Any:
        o, m = self.options, self.model
        llama.interrupt = stop
        return llama.create_chat_completion(
            messages=cast(Any, messages),
            tools=cast(Any, tools) or None,
            stream=True,
            max_tokens=max_tokens,
            temperature=m.temperature if o.temperature is None else o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            min_p=o.min_p,
            repeat_penalty=m.repeat_penalty if o.repeat_penalty is None else o.repeat_penalty,
            stop=list(m.stop) if o.stop is None else o.stop,
            seed=o.seed,
        )

    def _offered(self, tools: Sequence[Tool]) -> list[dict[str, Any]]:
        """The tools as the chat template takes them; none if this model does not call them reliably."""
        return tool_specs(tools) if tools and self.tools_on else []

    def _generate(
        self,
        llama: InterruptibleLlama,
        messages: list[Message],
        tools: list[dict[str, Any]],
        stop: threading.Event,
        emit: Callable[[object], None],
    ) -> None:
        """Worker thread: stream one reply, handing text pieces to ``emit`` until done or ``stop`` is set."""
        ctx = llama.ctx
        try:
            with self._turn(llama, stop):
                llama_cpp.llama_perf_context_reset(ctx)
                start = time.perf_counter()
                first = self._stream_reply(llama, messages, tools, stop, emit, start)
        except Interrupted:  # stopped while waiting for a slot
            return
        perf = llama_cpp.llama_perf_context(ctx)
        self.last_stats = TurnStats(
            prompt_tokens_evaluated=perf.n_p_eval,
            prompt_eval_s=perf.t_p_eval_ms / 1000,
            generated_tokens=perf.n_eval,
            generation_s=perf.t_eval_ms / 1000,
            first_token_s=first,
            context_tokens=llama.n_tokens,
            stopped_early=stop.is_set(),
        )

    @contextlib.contextmanager
    def _turn(self, llama: InterruptibleLlama, stop: threading.Event) -> Iterator[None]:
        """Wait for the model: per reply (hold one slot throughout) or per token (``eval`` takes one per decode)."""
        res = llama_pool.resources()
        per_reply = res.schedule == "reply"
        llama.token_slots = None if per_reply else res.slots
        if per_reply and not res.slots.acquire(stop):
            raise Interrupted
        try:
            yield
        finally:
            if per_reply:
                res.slots.release()

    def _stream_reply(
        self,
        llama: InterruptibleLlama,
        messages: list[Message],
        tools: list[dict[str, Any]],
        stop: threading.Event,
        emit: Callable[[object], None],
        start: float,
    ) -> float | None:
        """Hand each text piece to ``emit`` (tool calls after the text); returns the time to the first piece."""
        first: float | None = None
        split = ToolCallSplitter() if tools else None
        max_tokens = self.options.max_tokens
        chunks = cast(
            Iterator[Any], self._completion(llama, self._fit(llama, messages, tools), max_tokens, stop, tools)
        )
        try:
            for chunk in chunks:
                if stop.is_set():
                    break
                text = chunk["choices"][0]["delta"].get("content")
                if text and split is not None:
                    text = split.feed(text)
                if text:
                    if first is None:
                        first = time.perf_counter() - start
                    emit(text)
        except Interrupted:
            pass
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if split is not None and not stop.is_set():
            if rest := split.finish():
                first = time.perf_counter() - start if first is None else first
                emit(rest)
            for call in split.calls:
                emit(call)
        return first

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        """Text as it is generated, then the tool calls; ``tools`` are offered only where ``options.tools`` (or the
        catalogue, for a model that calls them reliably with an agent's prompt: none yet) says so."""
        offered = self._offered(tools)
        async with self._lock:
            llama = await self._model()
            await self._idle()
            if self._closed:
                raise LLMError("llama: LLM is closed")
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            self._stop = stop = threading.Event()

            def emit(item: object) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, item)

            def work() -> None:
                try:
                    self._generate(llama, list(messages), offered, stop, emit)
                except BaseException as exc:
                    emit(exc)
                finally:
                    emit(_DONE)

            self._busy = in_thread(work, "generate")
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, LLMError):
                        raise item
                    if isinstance(item, BaseException):
                        raise LLMError(f"llama: generation failed: {item}") from item
                    yield cast("str | ToolCall", item)
            finally:
                stop.set()  # barge-in: the worker stops before its next token
                await self._idle()

    async def prepare(self) -> None:
        """Take a warm context from the pool (or load one) before the call's clock starts."""
        async with self._lock:
            await self._model()

    async def warm(self, messages: list[Message], tools: Sequence[Tool] = (), *, wait: bool = False) -> None:
        """Start evaluating ``messages`` (the system prompt) so turn 1 only decodes the new tokens; a pooled
        context that already holds them (a previous call of the same agent) makes this a few tokens' work.

        Returns once the context is taken, not when the prefill ends (unless ``wait``): the greeting needs no
        LLM, so a cold prompt (~1 s) is evaluated while it plays instead of before; the first turn waits for it."""
        async with self._lock:
            await self._model()
            await self._idle()
            if not messages or self._closed:
                return
            offered = self._offered(tools)
            prefix_key = (tuple((m["role"], m["content"]) for m in messages), json.dumps(offered))
            self._swap_for_warm(prefix_key)
            llama = cast(InterruptibleLlama, self._llama)
            self._stop = stop = threading.Event()

            def prefill() -> None:
                # one sampled token: prompt evaluation is what we want; the KV cache keeps it for turn 1
                with contextlib.suppress(Interrupted), self._turn(llama, stop):
                    for _ in self._completion(llama, list(messages), 1, stop, offered):
                        pass
                self._prefix, self._prefix_key = llama.input_ids[: llama.n_tokens].tolist(), prefix_key

            self._busy = in_thread(prefill, "warm")
            if wait:
                await asyncio.shield(self._busy)

    async def aclose(self) -> None:
        """Stop any generation, wait for its thread, and return the context to the pool, cut back to the system
        prompt (nothing the caller said stays in it); a context the pool has no room for is freed."""
        self._closed = True
        self._stop.set()
        if self._busy is not None:
            await asyncio.gather(asyncio.shield(self._busy), return_exceptions=True)
        if self._loading is not None:
            await asyncio.gather(asyncio.shield(self._loading), return_exceptions=True)
            loaded = self._loading.done() and not self._loading.cancelled() and self._loading.exception() is None
            if loaded and self._llama is None:  # closed while loading (not: loaded, then traded in warm())
                self._llama = self._loading.result()
        llama, self._llama = self._llama, None
        if llama is not None and not self._give_back(llama, self._prefix, self._prefix_key):
            await in_thread(llama.close, "close")

"""The embedded LLM on llama-cpp-python: real models, real threads, no mocks.

The mechanics (threads, barge-in, the KV cache, the pool) run on SmolLM2-135M, the fastest model; what the
default model answers, and its tool calls, run on the default (``fast``) model.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from parley.services.llm import llama_pool
from parley.services.llm.base import LLMError, Message, ToolCall, registry
from parley.services.llm.llama import THREAD_PREFIX, LlamaLLM, default_model_path
from parley.services.llm.llama_context import llama_cpp

pytestmark = pytest.mark.slow

SYSTEM = (
    "You are Sam, the phone receptionist of Bright Smile Dental in Springfield. Keep every answer to one or two "
    "short sentences, because the caller hears you through a phone. The clinic is open Monday to Friday from "
    "eight in the morning to six in the evening and on Saturday from nine to one. It is closed on Sunday. "
    "A check-up costs sixty dollars and a cleaning costs eighty dollars. Dr. Patel and Dr. Gomez are the dentists. "
    "You can book, move or cancel appointments; ask for the caller's name and a phone number before booking. "
    "Never give medical advice: for pain or swelling, offer the earliest appointment. The clinic is at "
    "42 Elm Street, next to the library, with free parking behind the building."
)


def llm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()]


def wait_no_threads(within: float = 0.5) -> float:
    """Join our worker threads (they never need the event loop to finish); fail if any outlives ``within``."""
    start = time.perf_counter()
    for thread in llm_threads():
        thread.join(max(0.0, within - (time.perf_counter() - start)))
    assert not llm_threads(), f"worker threads left: {llm_threads()}"
    return time.perf_counter() - start


def make(**options: object) -> LlamaLLM:
    llm = registry.create("llama", {"max_tokens": 24, "seed": 7, "model": "smollm2-135m", **options})
    assert isinstance(llm, LlamaLLM)
    return llm


async def reply(llm: LlamaLLM, messages: list[Message]) -> list[str]:
    return [piece async for piece in llm.stream(messages) if isinstance(piece, str)]


async def test_streams_several_pieces_of_a_reply() -> None:
    llm = make()
    try:
        pieces = await reply(
            llm, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "When are you open?"}]
        )
        assert len(pieces) > 1
        assert "".join(pieces).strip()
        assert llm.last_stats is not None and llm.last_stats.generated_tokens > 1
    finally:
        await llm.aclose()
    wait_no_threads()


async def test_multi_turn_reuses_the_cached_prefix() -> None:
    """Turn 3 decodes only the new tokens: the system prompt and earlier turns stay in the KV cache."""
    llm = make()
    try:
        await llm.prepare()
        assert llm._llama is not None
        system_tokens = len(llm._llama.tokenize(SYSTEM.encode(), add_bos=False))
        assert system_tokens > 120
        messages: list[Message] = [{"role": "system", "content": SYSTEM}]
        stats = []
        for question in ("Hi, when are you open on Saturday?", "How much is a cleaning?", "Where are you?"):
            messages.append({"role": "user", "content": question})
            text = "".join(await reply(llm, messages))
            assert text.strip()
            messages.append({"role": "assistant", "content": text})
            stats.append(llm.last_stats)
        first, _, third = stats
        assert first is not None and third is not None
        assert first.prompt_tokens_evaluated > system_tokens  # cold: everything
        assert third.prompt_tokens_evaluated < 40  # "<|im_end|>", the question, the assistant header
        assert third.context_tokens > system_tokens + 40  # ...yet the context holds the whole conversation
    finally:
        await llm.aclose()


async def test_warm_evaluates_the_system_prompt_before_the_first_turn() -> None:
    llm = make()
    try:
        system: list[Message] = [{"role": "system", "content": SYSTEM}]
        await llm.warm(system, wait=True)
        assert llm._llama is not None and llm._llama.n_tokens > 120
        await reply(llm, [*system, {"role": "user", "content": "Is Dr. Patel in today?"}])
        assert llm.last_stats is not None and llm.last_stats.prompt_tokens_evaluated < 30
    finally:
        await llm.aclose()
    wait_no_threads()


async def test_closing_the_stream_stops_generation_at_once() -> None:
    llm = make(max_tokens=400, temperature=0.8)
    messages: list[Message] = [{"role": "user", "content": "Tell me a very long story about a dragon."}]
    try:
        stream = llm.stream(messages)
        pieces = [await anext(stream), await anext(stream), await anext(stream)]
        start = time.perf_counter()
        await stream.aclose()  # what barge-in does
        closed_in = time.perf_counter() - start
        assert closed_in < 0.5
        wait_no_threads()
        assert llm._llama is not None and llm.last_stats is not None
        assert llm.last_stats.stopped_early and llm.last_stats.generated_tokens < 10
        n_tokens = llm._llama.n_tokens
        await asyncio.sleep(0.2)
        assert llm._llama.n_tokens == n_tokens  # nothing decoded after the close
        assert pieces
        # the conversation goes on after a barge-in
        again = await reply(
            llm,
            [
                *messages,
                {"role": "assistant", "content": "".join(str(p) for p in pieces)},
                {"role": "user", "content": "Stop. Say hi."},
            ],
        )
        assert "".join(again).strip()
    finally:
        await llm.aclose()
    wait_no_threads()


async def test_cancelling_the_consumer_stops_the_worker() -> None:
    llm = make(max_tokens=400)
    got = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.stream([{"role": "user", "content": "Count from one to two hundred."}]):
            got.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(got.wait(), 30)
        start = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        wait_no_threads()
        assert time.perf_counter() - start < 0.5
        assert llm.last_stats is not None and llm.last_stats.stopped_early
    finally:
        await llm.aclose()
    assert llm._llama is None
    with pytest.raises(LLMError, match="closed"):
        await reply(llm, [{"role": "user", "content": "hi"}])
    wait_no_threads()


async def test_a_long_call_drops_the_oldest_turns_to_fit_the_context() -> None:
    llm = make(n_ctx=512, max_tokens=16)
    messages: list[Message] = [{"role": "system", "content": SYSTEM}]
    for i in range(12):  # ~600 tokens of history: more than the context holds
        messages.append({"role": "user", "content": f"Question {i}: can I book a check-up with Dr. Patel next week?"})
        messages.append({"role": "assistant", "content": f"Answer {i}: yes, Dr. Patel has openings on Tuesday at ten."})
    messages.append({"role": "user", "content": "Great, book Tuesday at ten."})
    try:
        assert "".join(await reply(llm, messages)).strip()
        assert llm.last_stats is not None and llm.last_stats.context_tokens <= 512
    finally:
        await llm.aclose()


async def test_concurrent_loads_leave_stdout_and_stderr_alone() -> None:
    """Overlapping loads leave fds 1 and 2 and sys.stdout/stderr as they were (llama-cpp-python's fd swap during a
    load is disabled: parley.services.llm.llama_context; llama.cpp's own output goes through llama_log_set)."""
    before = [os.fstat(fd)[:2] for fd in (1, 2)], sys.stdout, sys.stderr
    llms = [make() for _ in range(4)]
    try:
        await asyncio.gather(*(llm.prepare() for llm in llms))
    finally:
        await asyncio.gather(*(llm.aclose() for llm in llms))
    assert ([os.fstat(fd)[:2] for fd in (1, 2)], sys.stdout, sys.stderr) == before


async def test_bad_model_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LLMError, match=r"model file not found: .*nope\.gguf"):
        LlamaLLM(LlamaLLM.Options(model_path=str(missing)))
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file" * 100)
    llm = LlamaLLM(LlamaLLM.Options(model_path=str(garbage)))
    with pytest.raises(LLMError, match=r"cannot load model .*garbage\.gguf"):
        await llm.warm([{"role": "system", "content": "hi"}])
    await llm.aclose()
    wait_no_threads()


def test_options_are_validated() -> None:
    assert default_model_path("smollm2-135m").name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert default_model_path().name == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert make().options.repeat_penalty is None  # the model's own (1.1 for SmolLM2), unless a document sets it
    with pytest.raises(ValidationError, match="n_gpu"):
        registry.options("llama", {"n_gpu": 1})
    with pytest.raises(ValidationError, match="max_tokens"):
        registry.options("llama", {"max_tokens": 0})


# --- the process-wide pool of warm contexts and the limit on concurrent evaluations ---------------------------


@pytest.fixture
def pool() -> Iterator[llama_pool.Resources]:
    """Fresh slots and pool for one test (one evaluation at a time, two idle contexts kept)."""
    res = llama_pool.Resources(llama_pool.Slots(1), llama_pool.ContextPool(size=2), "token")
    for old in llama_pool.reset(res):
        old.close()
    yield res
    for llama in llama_pool.reset():
        llama.close()


def kv_positions(llm: LlamaLLM) -> int:
    """Cells the context's KV cache holds for sequence 0 (its highest position + 1)."""
    assert llm._llama is not None
    memory = llama_cpp.llama_get_memory(llm._llama.ctx)
    return int(llama_cpp.llama_memory_seq_pos_max(memory, 0)) + 1


async def test_a_pooled_context_keeps_nothing_of_the_previous_call(pool: llama_pool.Resources) -> None:
    """Security: call B gets call A's warm context back with the system prompt only, neither A's words in its
    tokens nor their KV cells; B still reuses the prefilled system prompt."""
    system: list[Message] = [{"role": "system", "content": SYSTEM}]
    a = make()
    await a.warm(system)  # in the background: the stream waits for it
    secret: list[Message] = [*system, {"role": "user", "content": "My name is Zebulon Quagmire, PIN 7319."}]
    assert "".join(await reply(a, secret)).strip()
    assert a._llama is not None
    context_a, warm_tokens = a._llama, len(a._prefix)
    assert a._llama.n_tokens > warm_tokens
    await a.aclose()
    assert pool.pool.idle(a._pool_key) == 1

    b = make()
    try:
        await b.prepare()
        assert b._llama is context_a  # the same warm context, handed on
        held = b._llama.detokenize(b._llama.input_ids[: b._llama.n_tokens].tolist()).decode(errors="replace")
        assert "Zebulon" not in held and "7319" not in held and "Springfield" in held
        assert b._llama.n_tokens <= warm_tokens and kv_positions(b) == b._llama.n_tokens
        await b.warm(system)
        await reply(b, [*system, {"role": "user", "content": "What is my name?"}])
        assert b.last_stats is not None and b.last_stats.prompt_tokens_evaluated < 30
    finally:
        await b.aclose()
    wait_no_threads()


async def test_closing_returns_contexts_and_frees_what_the_pool_cannot_keep(pool: llama_pool.Resources) -> None:
    llms = [make() for _ in range(3)]
    await asyncio.gather(*(llm.prepare() for llm in llms))
    contexts = {id(llm._llama) for llm in llms}
    assert len(contexts) == 3 and pool.pool.idle(llms[0]._pool_key) == 0
    await asyncio.gather(*(llm.aclose() for llm in llms))
    assert pool.pool.idle(llms[0]._pool_key) == 2  # its size; the third was freed
    again = make()
    await again.prepare()
    assert id(again._llama) in contexts
    await again.aclose()
    wait_no_threads()


@pytest.mark.parametrize("schedule", ["token", "reply"])
async def test_the_concurrency_limit_bounds_concurrent_evaluations(
    pool: llama_pool.Resources, schedule: llama_pool.Schedule
) -> None:
    pool.schedule = schedule
    llms = [make(max_tokens=12) for _ in range(3)]
    questions = ("When are you open?", "Where are you?", "How much is a cleaning?")
    try:
        texts = await asyncio.gather(
            *(
                reply(llm, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])
                for llm, q in zip(llms, questions, strict=True)
            )
        )
    finally:
        await asyncio.gather(*(llm.aclose() for llm in llms))
    assert all("".join(t).strip() for t in texts)
    assert pool.slots.peak == 1 and pool.slots.active == 0
    wait_no_threads()


def test_slots_are_first_come_first_served_and_a_stopped_waiter_leaves() -> None:
    slots = llama_pool.Slots(1)
    assert slots.acquire()
    order: list[int] = []
    stopped = threading.Event()
    stopped.set()
    assert not slots.acquire(stopped)  # a barge-in does not wait for the slot

    def wait(n: int) -> None:
        assert slots.acquire()
        order.append(n)
        slots.release()

    threads = []
    for n in range(3):
        threads.append(threading.Thread(target=wait, args=(n,)))
        threads[-1].start()
        while len(slots._queue) < n + 1:
            time.sleep(0.001)
    slots.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2] and slots.peak == 1 and slots.active == 0


def test_openmp_is_told_to_sleep_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    assert llama_pool.configure_openmp(env) == {"OMP_WAIT_POLICY": "PASSIVE"} and env["OMP_WAIT_POLICY"] == "PASSIVE"
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(mine)
        assert llama_pool.configure_openmp(env) == {} and env == mine
    assert 1 <= llama_pool.batch_threads(2) <= 2 and llama_pool.default_concurrency(2) == 1
    assert llama_pool.default_concurrency(8) == 4


async def test_warm_returns_before_the_prefill_and_the_first_turn_waits_for_it(pool: llama_pool.Resources) -> None:
    """The greeting plays while a cold system prompt is evaluated; turn 1 still finds it in the cache."""
    llm = make()
    system: list[Message] = [{"role": "system", "content": SYSTEM + " Unique test prompt."}]
    try:
        await llm.warm(system)
        assert llm._busy is not None  # the prefill is still on its thread (or just finished)
        await reply(llm, [*system, {"role": "user", "content": "Is Dr. Gomez in today?"}])
        assert llm.last_stats is not None and llm.last_stats.prompt_tokens_evaluated < 30
    finally:
        await llm.aclose()
    wait_no_threads()


async def test_warm_trades_for_a_pooled_context_that_holds_the_same_prompt(pool: llama_pool.Resources) -> None:
    other: list[Message] = [{"role": "system", "content": "You are a florist's answering machine. Be brief."}]
    system: list[Message] = [{"role": "system", "content": SYSTEM}]
    a, b = make(), make()
    await a.warm(other, wait=True)
    await b.warm(system, wait=True)
    context_b = b._llama
    await a.aclose()
    await b.aclose()  # the pool holds [a's, b's]: a plain take gets a's
    c = make()
    try:
        await c.prepare()
        assert c._llama is not context_b
        await c.warm(system, wait=True)
        assert c._llama is context_b and pool.pool.idle(c._pool_key) == 1
    finally:
        await c.aclose()
    assert pool.pool.idle(c._pool_key) == 2
    wait_no_threads()


def test_the_pool_never_holds_one_context_twice() -> None:
    """A context handed back twice (a bug elsewhere) must not go to two calls at once."""
    import numpy as np

    class FakeContext:
        def kv_cache_seq_rm(self, seq: int, p0: int, p1: int) -> bool:
            return True

    class FakeLlama:
        def __init__(self) -> None:
            self.input_ids = np.arange(8, dtype=np.intc)
            self.n_tokens = 8
            self._ctx = FakeContext()

    pool = llama_pool.ContextPool(size=3)
    fake = FakeLlama()
    assert pool.give("k", fake, "p", [0, 1, 2, 3])
    assert fake.n_tokens == 4 and fake.input_ids[4:].tolist() == [0, 0, 0, 0]
    assert pool.give("k", fake, "p", [0, 1, 2, 3]) and pool.idle("k") == 1
    assert pool.take("k", "p") == (fake, "p") and pool.take("k") is None


# --- the default model: grounded answers and tool calls ---------------------------------------------------------

RECEPTIONIST = Path(__file__).resolve().parents[1] / "examples" / "agents" / "receptionist.yaml"


def default_llm(**options: object) -> LlamaLLM:
    """The receptionist's own LLM options, with the default model."""
    from parley.agent.document import load_agent

    agent = load_agent(RECEPTIONIST)
    llm = registry.create("llama", {**agent.llm.options, "seed": 3, **options})
    assert isinstance(llm, LlamaLLM) and llm.model.name == "qwen2.5-0.5b"
    return llm


def receptionist_prompt() -> list[Message]:
    """The receptionist's prompt, and its knowledge collection's file as a call's retrieval gives it."""
    from parley.agent.context import Conversation
    from parley.agent.document import load_agent
    from parley.processors.knowledge_lookup import facts_message

    agent = load_agent(RECEPTIONIST)
    facts = (RECEPTIONIST.parent / "knowledge" / "bright-smile.md").read_text()
    return [*Conversation(agent.system_prompt, greeting=agent.greeting).system_messages(), facts_message([facts])]


async def test_the_default_model_answers_from_the_prompt() -> None:
    llm = default_llm()
    try:
        text = "".join(
            await reply(
                llm, [*receptionist_prompt(), {"role": "user", "content": "How late are you open on Saturday?"}]
            )
        )
        assert "1" in text or "one" in text.lower(), text
        assert "6" not in text and "six" not in text.lower(), text
    finally:
        await llm.aclose()
    wait_no_threads()


async def test_tools_are_off_by_default_and_an_agent_may_opt_in() -> None:
    """Opted in, the model's call comes out as a ToolCall (never as spoken text), and a reply without one still
    streams piece by piece; warm() with the tools leaves only the new turn to evaluate."""
    from parley.agent.document import ActionSettings

    tools = ActionSettings(hang_up=True, transfer_to="sip:desk@example.com").tools()
    assert not default_llm().supports_tools
    llm = default_llm(tools=True, temperature=0)
    assert llm.supports_tools
    system: list[Message] = [{"role": "system", "content": "You are a phone assistant. Use the tools when asked."}]
    try:
        await llm.warm(system, tools, wait=True)
        pieces = [p async for p in llm.stream([*system, {"role": "user", "content": "Please hang up now."}], tools)]
        assert [p.name for p in pieces if isinstance(p, ToolCall)] == ["hang_up"], pieces
        assert not any("tool_call" in p or "{" in p for p in pieces if isinstance(p, str)), pieces
        assert llm.last_stats is not None and llm.last_stats.prompt_tokens_evaluated < 30
        question: Message = {"role": "user", "content": "What is the capital of France?"}
        pieces = [p async for p in llm.stream([*system, question], tools)]
        assert not [p for p in pieces if isinstance(p, ToolCall)] and len(pieces) > 1
        assert "paris" in "".join(str(p) for p in pieces).lower()
    finally:
        await llm.aclose()
    wait_no_threads()

"""The ``langchain`` provider running real LangGraph graphs whose ChatOpenAI models talk to a local server.

The server speaks OpenAI's chat-completions streaming wire format (``chat.completion.chunk`` server-sent events)
on 127.0.0.1 and answers by model name: a router's JSON, an answer, a tool call then an answer, or words without
end (for barge-in). The graphs are built here or come from examples/langchain/clinic_graph.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import SecretStr, ValidationError

from parley.services.llm.base import LLM, LLMError, Message, registry
from parley.services.llm.langchain import LangChainLLM, to_langchain

ROUTE_JSON = ['{"intent"', ': "hours"', "}"]
ANSWER = ["We are ", "open until ", "six ", "today."]
HOURS_ANSWER = ["On Monday ", "we are open ", "8 am to 6 pm."]
QUESTION: list[Message] = [
    {"role": "system", "content": "You are a clinic receptionist."},
    {"role": "user", "content": "When are you open on Monday?"},
]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]
    written: int  # "endless" chunks written so far
    disconnected: threading.Event
    release: threading.Event  # "gated" holds the rest of its answer until the test has seen the first piece
    finished: threading.Event  # "gated" has sent its last chunk


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        model = body["model"]
        if model == "router":
            self.send_stream(ROUTE_JSON)
        elif model == "tools" and body["messages"][-1]["role"] != "tool":  # first ask for the tool, then answer
            call = {"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "opening_hours", "arguments": "{\"day\": \"Monday\"}"}}  # fmt: skip
            self.send_stream([], tool_call=call)
        elif model == "tools":
            self.send_stream(HOURS_ANSWER)
        elif model == "gated":
            self.send_stream(ANSWER, gate=True)
        elif model == "endless":
            self.send_stream(["word "] * 3000, endless=True)
        else:
            self.send_stream(ANSWER)

    def send_stream(
        self, pieces: list[str], tool_call: dict[str, Any] | None = None, gate: bool = False, endless: bool = False
    ) -> None:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
            return f"data: {json.dumps(data)}\n\n".encode()

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            self.wfile.write(chunk({"role": "assistant", "content": ""}))
            for i, piece in enumerate(pieces):
                self.wfile.write(chunk({"content": piece}))
                self.wfile.flush()
                if endless:
                    self.server.written += 1
                    time.sleep(0.005)
                if gate and i == 0:
                    self.server.release.wait(5)
            if tool_call:
                self.wfile.write(chunk({"tool_calls": [tool_call]}))
            self.wfile.write(chunk({}, "tool_calls" if tool_call else "stop") + b"data: [DONE]\n\n")
            self.wfile.flush()
            if gate:
                self.server.finished.set()
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()


@pytest.fixture
def allow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator lets documents name the graphs here and the example's."""
    monkeypatch.setenv("PARLEY_LANGCHAIN_ALLOW", "tests.test_llm_langchain, examples.langchain")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, allow: None) -> Iterator[Server]:
    srv = Server(("127.0.0.1", 0), Handler)
    srv.requests, srv.written = [], 0
    srv.disconnected, srv.release, srv.finished = threading.Event(), threading.Event(), threading.Event()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    monkeypatch.setenv("LANGCHAIN_TEST_URL", url)
    monkeypatch.setenv("CLINIC_LLM_BASE_URL", url)
    monkeypatch.setenv("CLINIC_LLM_MODEL", "tools")
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")  # the example's guarded client reaches this server
    yield srv
    srv.shutdown()
    srv.server_close()


def chat(model: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=os.environ["LANGCHAIN_TEST_URL"], model=model, api_key=SecretStr("sk-test"), streaming=True,
        max_retries=0,
    )  # fmt: skip


class RouterState(MessagesState):
    intent: str


def router_graph() -> Any:
    """A classifier node whose JSON decides the route (never to be spoken), then the node that answers."""
    router, answerer = chat("router"), chat(os.environ.get("LANGCHAIN_TEST_ANSWER_MODEL", "answer"))

    async def route(state: RouterState) -> dict[str, Any]:
        decision = await router.ainvoke(state["messages"])
        return {"intent": json.loads(str(decision.content))["intent"]}

    async def answer(state: RouterState) -> dict[str, Any]:
        return {"messages": [await answerer.ainvoke([SystemMessage(f"intent: {state['intent']}"), *state["messages"]])]}

    graph = StateGraph(RouterState)
    graph.add_node("route", route)
    graph.add_node("answer", answer)
    graph.add_edge(START, "route")
    graph.add_edge("route", "answer")
    graph.add_edge("answer", END)
    return graph.compile()


def failing_graph() -> Any:
    def explode(state: MessagesState) -> dict[str, Any]:
        raise RuntimeError("upstream said: Incorrect API key provided: sk-live-SECRET-0123456789")

    graph = StateGraph(MessagesState)
    graph.add_node("lookup", explode)
    graph.add_edge(START, "lookup")
    return graph.compile()


SLOW: dict[str, Any] = {"steps": 0, "cancelled": 0, "working": asyncio.Event()}


def slow_graph() -> Any:
    """A node that works for seconds without a word (a slow lookup): barge-in must cancel it, not wait."""

    async def lookup(state: MessagesState) -> dict[str, Any]:
        try:
            for _ in range(500):
                SLOW["steps"] += 1
                if SLOW["steps"] == 5:
                    SLOW["working"].set()
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            SLOW["cancelled"] += 1
            raise
        return {"messages": [AIMessage("Found it.")]}

    graph = StateGraph(MessagesState)
    graph.add_node("lookup", lookup)
    graph.add_edge(START, "lookup")
    return graph.compile()


RECEIVED: list[list[BaseMessage]] = []
CONFIGURED: list[dict[str, Any]] = []
TICKS = {"n": 0}


async def _words(messages: list[BaseMessage], config: RunnableConfig) -> AsyncIterator[Any]:
    RECEIVED.append(messages)
    CONFIGURED.append(config.get("configurable", {}))
    yield "Hello "
    yield AIMessageChunk(content="from a ")
    yield AIMessageChunk(content=[{"type": "text", "text": "runnable."}, {"type": "image_url", "image_url": "x"}])


async def _ticking(messages: list[BaseMessage]) -> AsyncIterator[str]:
    while True:
        TICKS["n"] += 1
        yield "tick "
        await asyncio.sleep(0.01)


plain = RunnableLambda(_words)
ticking = RunnableLambda(_ticking)
not_runnable = 42


def provider(runnable: str, **options: Any) -> LLM:
    llm = registry.create("langchain", {"runnable": runnable, **options})
    assert isinstance(llm, LangChainLLM) and llm.supports_tools is False
    return llm


async def collect(llm: LLM, messages: list[Message] = QUESTION) -> list[str]:
    pieces = [p async for p in llm.stream(messages)]
    assert all(isinstance(p, str) for p in pieces)
    return [str(p) for p in pieces]


async def test_only_the_speak_nodes_tokens_are_spoken(server: Server) -> None:
    pieces = await collect(provider("tests.test_llm_langchain:router_graph", speak_nodes=["answer"]))
    assert pieces == ANSWER  # streamed token by token, and no trace of the router's JSON
    assert [r["model"] for r in server.requests] == ["router", "answer"]
    assert server.requests[1]["messages"][0] == {"role": "system", "content": "intent: hours"}  # the route was used
    assert server.requests[0]["messages"][-1] == {"role": "user", "content": "When are you open on Monday?"}
    # without speak_nodes every AI token is spoken, the classifier's JSON too: that is what the option is for
    assert "".join(await collect(provider("tests.test_llm_langchain:router_graph"))) == "".join(ROUTE_JSON + ANSWER)


async def test_the_example_tool_graph_speaks_the_answer_after_the_tool(server: Server) -> None:
    pieces = await collect(provider("examples.langchain.clinic_graph:build"))
    assert pieces == HOURS_ANSWER  # the tool call and the tool's result are not spoken
    assert len(server.requests) == 2
    assert server.requests[0]["tools"][0]["function"]["name"] == "opening_hours"
    tool_result = server.requests[1]["messages"][-1]
    assert tool_result["role"] == "tool" and tool_result["tool_call_id"] == "call_1"
    assert tool_result["content"] == "Open 8 am to 6 pm on Monday."
    assert "".join(await collect(provider("examples.langchain.clinic_graph:build", speak_nodes=["tools"]))) == ""


async def test_tokens_arrive_before_the_graph_ends(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGCHAIN_TEST_ANSWER_MODEL", "gated")
    stream = provider("tests.test_llm_langchain:router_graph", speak_nodes=["answer"]).stream(QUESTION)
    first = await asyncio.wait_for(anext(stream), 5)
    assert first == ANSWER[0] and not server.finished.is_set()  # heard while the model is still generating
    server.release.set()
    assert [first] + [p async for p in stream] == ANSWER
    assert server.finished.is_set()


async def test_barge_in_closes_the_model_stream(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGCHAIN_TEST_ANSWER_MODEL", "endless")
    stream = provider("tests.test_llm_langchain:router_graph", speak_nodes=["answer"]).stream(QUESTION)
    for _ in range(3):
        assert await asyncio.wait_for(anext(stream), 5) == "word "
    started = time.perf_counter()
    await stream.aclose()  # the caller spoke
    assert time.perf_counter() - started < 1.0
    assert await asyncio.to_thread(server.disconnected.wait, 3), "the model's HTTP stream was left open"
    written = server.written
    await asyncio.sleep(0.3)
    assert server.written == written < 3000  # nothing is generated for nobody


async def test_barge_in_cancels_a_node_that_is_still_working(allow: None) -> None:
    llm = provider("tests.test_llm_langchain:slow_graph")

    async def reply() -> list[str]:  # as the responder reads a reply, until the caller speaks
        async with aclosing(llm.stream(QUESTION)) as stream:
            return [str(p) async for p in stream]

    SLOW["working"] = asyncio.Event()
    task = asyncio.create_task(reply())
    await asyncio.wait_for(SLOW["working"].wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    steps = SLOW["steps"]
    await asyncio.sleep(0.2)
    assert SLOW["steps"] == steps < 500 and SLOW["cancelled"] == 1


async def test_barge_in_stops_a_plain_runnable(allow: None) -> None:
    stream = provider("tests.test_llm_langchain:ticking").stream(QUESTION)
    assert [await anext(stream) for _ in range(3)] == ["tick "] * 3
    await stream.aclose()
    ticks = TICKS["n"]
    await asyncio.sleep(0.1)
    assert TICKS["n"] == ticks


async def test_a_plain_runnable_streams_strings_and_chunks(allow: None) -> None:
    RECEIVED.clear()
    assert await collect(provider("tests.test_llm_langchain:plain")) == ["Hello ", "from a ", "runnable."]
    assert [type(m) for m in RECEIVED[0]] == [SystemMessage, HumanMessage]  # the bare message list by default
    RECEIVED.clear()
    config = {"configurable": {"clinic": "riverside"}}  # passed through as the run's RunnableConfig
    await collect(provider("tests.test_llm_langchain:plain", input_key="history", config=config))
    assert CONFIGURED[-1] == {"clinic": "riverside"}  # as a prompt's placeholder
    received: Any = RECEIVED[0]
    assert list(received) == ["history"] and [type(m) for m in received["history"]] == [SystemMessage, HumanMessage]


async def test_a_graph_that_raises_is_an_llm_error_without_its_message(allow: None) -> None:
    with pytest.raises(LLMError) as err:
        await collect(provider("tests.test_llm_langchain:failing_graph"))
    assert "RuntimeError" in str(err.value) and "'lookup'" in str(err.value)
    assert "SECRET" not in str(err.value) and err.value.__cause__ is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("examples.langchain.nope:graph", "cannot import 'examples.langchain.nope'"),
        ("tests.test_llm_langchain:nope", "has no attribute 'nope'"),
        ("tests.test_llm_langchain:not_runnable", "is a int, not a Runnable"),
        ("os:getcwd", "'os' is not listed in PARLEY_LANGCHAIN_ALLOW"),  # no document may import just anything
        ("tests.test_llm_langchain_x:plain", "not listed in PARLEY_LANGCHAIN_ALLOW"),  # a prefix is not a package
    ],
)
def test_a_wrong_import_path_is_a_clear_error(allow: None, path: str, expected: str) -> None:
    with pytest.raises(LLMError, match=r"^langchain: ") as err:
        registry.create("langchain", {"runnable": path})
    assert expected in str(err.value)


def test_options_are_checked_before_any_import() -> None:
    for bad in ({"runnable": "no_colon"}, {"runnable": "a:b", "speak_nodes": "answer"}, {"runnable": "a:b", "x": 1}):
        with pytest.raises(ValidationError):
            registry.options("langchain", bad)


def test_without_the_extra_the_error_names_it(tmp_path: Any) -> None:
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('langchain_core', 'langgraph'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from parley.services.llm.base import LLMError, registry\n"
        "try:\n"
        "    registry.create('langchain', {'runnable': 'a:b'})\n"
        "except LLMError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'parley[langchain]'" in out.stdout


def test_messages_convert_with_tool_calls_and_results() -> None:
    messages: list[Message] = [
        *QUESTION,
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "hours", "arguments": "{\"day\": \"Monday\"}"}}]},
        {"role": "tool", "content": "{\"open\": \"8-18\"}", "tool_call_id": "c1"},
        {"role": "assistant", "content": "Eight to six."},
    ]  # fmt: skip
    out = to_langchain(messages)
    assert [type(m) for m in out] == [SystemMessage, HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert isinstance(out[2], AIMessage) and out[2].tool_calls[0]["args"] == {"day": "Monday"}
    assert isinstance(out[3], ToolMessage) and out[3].tool_call_id == "c1"

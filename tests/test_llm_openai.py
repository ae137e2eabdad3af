"""The OpenAI-compatible streaming client against real local servers, no mocks.

OpenAI and Azure OpenAI cannot be reached here; this tests the client against llama-cpp-python's server,
which speaks the same documented chat-completions streaming wire format. Azure's URL shape and ``api-key``
header, and error answers (401/404/slow), are checked against a small local HTTP server that answers in the
documented ``chat.completion.chunk`` server-sent-events format.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from parley.services.llm.base import LLMError, Message, Tool, ToolCall, registry
from parley.services.llm.llama import default_model_path
from parley.services.llm.openai_compat import OpenAICompatibleLLM
from parley.services.secrets import CredentialError, EnvSecrets, resolve_options

from .support.service import free_port

pytestmark = pytest.mark.slow

QUESTION: list[Message] = [
    {"role": "system", "content": "You are a helpful phone receptionist. Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]
SECRET = "sk-parley-TEST-secret-0123456789"


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers here are local: the operator allow-lists loopback for the SSRF guard, as a local vLLM would need."""
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")


class LlamaServer(NamedTuple):
    url: str
    log: Path


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The real ``python -m llama_cpp.server`` serving the bundled SmolLM2 GGUF."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path("smollm2-135m"))]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({proc.returncode}):\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer in 60 s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield LlamaServer(base_url, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]
    disconnected: threading.Event


class Handler(BaseHTTPRequestHandler):
    """Answers by the request's model name: an SSE stream, a 401 echoing the key, a 404, or silence."""

    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self, body: dict[str, Any] | None) -> None:
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append(
            {"method": self.command, "path": url.path, "query": parse_qs(url.query), "headers": headers, "body": body}
        )

    def do_GET(self) -> None:  # /models, for the preconnect
        self.record(None)
        self.send_json(200, {"object": "list", "data": []})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.record(body)
        model = body["model"]
        if model == "needs-key":  # like OpenAI, but quoting the whole key back
            sent = self.headers.get("Authorization", "")
            self.send_json(
                401, {"error": {"message": f"Incorrect API key provided: {sent}", "code": "invalid_api_key"}}
            )
        elif model == "missing":
            self.send_json(404, {"error": {"message": "The model `missing` does not exist", "code": "model_not_found"}})
        elif model == "slow":
            time.sleep(1.5)
        elif model == "tools":  # text, then two tool calls whose arguments arrive in fragments
            self.send_stream(["One ", "moment."], TOOL_DELTAS)
        elif model == "broken-tools":
            self.send_stream([], [{"index": 0, "id": "c", "type": "function",
                                   "function": {"name": "hang_up", "arguments": "{not json"}}])  # fmt: skip
        else:
            self.send_stream(["Hel", "lo", " there"] if model != "endless" else ["word "] * 500)

    def send_stream(self, pieces: list[str], tool_calls: Sequence[dict[str, Any]] = ()) -> None:
        def event(data: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(data)}\n\n".encode()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return event(
                {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
            )

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            # Azure sends its prompt content-filter results first, in a chunk without choices
            self.wfile.write(
                event({"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []})
            )
            self.wfile.write(chunk({"role": "assistant", "content": ""}))
            for piece in pieces:
                self.wfile.write(chunk({"content": piece}))
                self.wfile.flush()
                time.sleep(0.01)
            for call in tool_calls:
                self.wfile.write(chunk({"tool_calls": [call]}))
                self.wfile.flush()
            self.wfile.write(chunk({}, "tool_calls" if tool_calls else "stop") + b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()


# as OpenAI streams them: the first delta of a call names it, later ones carry only argument fragments
TOOL_DELTAS: list[dict[str, Any]] = [
    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "transfer", "arguments": ""}},
    {"index": 0, "function": {"arguments": '{"tar'}},
    {"index": 0, "function": {"arguments": 'get": "sal'}},
    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "hang_up", "arguments": '{"reason"'}},
    {"index": 0, "function": {"arguments": 'es"}'}},
    {"index": 1, "function": {"arguments": ': "done"}'}},
]


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer(("127.0.0.1", 0), Handler)
    server.requests, server.disconnected = [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client(**options: Any) -> OpenAICompatibleLLM:
    llm = registry.create("openai", {"max_retries": 0, **options})
    assert isinstance(llm, OpenAICompatibleLLM)
    return llm


async def collect(llm: OpenAICompatibleLLM, messages: list[Message] = QUESTION) -> list[str | ToolCall]:
    return [piece async for piece in llm.stream(messages)]


async def test_streams_deltas_from_llama_cpp_server(llama_server: LlamaServer) -> None:
    llm = client(base_url=llama_server.url, model="smollm2", max_tokens=24, temperature=0.3)
    try:
        await llm.prepare()
        pieces = await collect(llm)
        assert len(pieces) > 1
        text = "".join(p for p in pieces if isinstance(p, str))
        assert text.strip()
        turn2: list[Message] = [
            *QUESTION,
            {"role": "assistant", "content": text},
            {"role": "user", "content": "And Italy?"},
        ]
        assert "".join(p for p in await collect(llm, turn2) if isinstance(p, str)).strip()
    finally:
        await llm.aclose()


async def test_early_close_ends_the_stream(llama_server: LlamaServer) -> None:
    llm = client(base_url=llama_server.url, model="smollm2", max_tokens=400, temperature=0.8)
    try:
        stream = llm.stream([{"role": "user", "content": "Write a very long story about a dragon."}])
        assert await anext(stream) is not None
        await anext(stream)
        start = time.perf_counter()
        await stream.aclose()
        assert time.perf_counter() - start < 0.5
        # the server saw the client go (it checks after each chunk and then stops generating)
        for _ in range(100):  # up to 2 s
            if "Disconnected from client" in llama_server.log.read_text():
                break
            await asyncio.sleep(0.02)
        assert "Disconnected from client" in llama_server.log.read_text()
        short = client(base_url=llama_server.url, model="smollm2", max_tokens=8)
        start = time.perf_counter()
        assert await collect(short)
        assert time.perf_counter() - start < 5
        await short.aclose()
    finally:
        await llm.aclose()


async def test_early_close_drops_the_http_stream(fake_server: FakeServer) -> None:
    fake_server.disconnected.clear()
    llm = client(base_url=f"http://127.0.0.1:{fake_server.server_port}/v1", model="endless")
    stream = llm.stream(QUESTION)
    assert await anext(stream) == "word "
    await stream.aclose()
    await llm.aclose()
    assert fake_server.disconnected.wait(2), "the server kept streaming to a closed client"


async def test_actions_go_as_tools_and_tool_call_deltas_come_back_whole(
    fake_server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    tools = [
        Tool("hang_up", "End the call.", {"type": "object", "properties": {"reason": {"type": "string"}}}),
        Tool("transfer", "Transfer the caller.", {"type": "object", "properties": {"target": {"type": "string"}}}),
    ]
    llm = client(base_url=url, model="tools", preconnect=False)
    try:
        items = [item async for item in llm.stream(QUESTION, tools)]
        sent = fake_server.requests[-1]["body"]
        assert items == ["One ", "moment.", ToolCall("transfer", {"target": "sales"}),
                         ToolCall("hang_up", {"reason": "done"})]  # fmt: skip
        assert sent["tools"] == [
            {"type": "function", "function": {"name": "hang_up", "description": "End the call.",
                                              "parameters": tools[0].parameters}},
            {"type": "function", "function": {"name": "transfer", "description": "Transfer the caller.",
                                              "parameters": tools[1].parameters}},
        ]  # fmt: skip
        await collect(llm)  # no tools offered: none sent
        assert "tools" not in fake_server.requests[-1]["body"]
    finally:
        await llm.aclose()
    off = client(base_url=url, model="tools", preconnect=False, tools=False)  # a server without function calling
    [item async for item in off.stream(QUESTION, tools)]
    assert "tools" not in fake_server.requests[-1]["body"]
    await off.aclose()
    broken = client(base_url=url, model="broken-tools", preconnect=False)
    assert [item async for item in broken.stream(QUESTION, tools)] == [ToolCall("hang_up", {})]
    assert "not JSON" in caplog.text
    await broken.aclose()


async def test_azure_path_version_and_key_header(fake_server: FakeServer) -> None:
    llm = client(
        azure_endpoint=f"http://127.0.0.1:{fake_server.server_port}",
        azure_deployment="voice-agent",
        api_version="2024-10-21",
        api_key="azure-key-42",
        model="gpt-4o-mini",
        max_tokens=50,
    )
    try:
        await llm.prepare()
        preconnect = fake_server.requests[-1]
        assert await collect(llm) == ["Hel", "lo", " there"]
    finally:
        await llm.aclose()
    assert preconnect["method"] == "GET" and preconnect["path"] == "/openai/models"
    assert preconnect["headers"]["api-key"] == "azure-key-42"
    request = fake_server.requests[-1]
    assert request["path"] == "/openai/deployments/voice-agent/chat/completions"
    assert request["query"] == {"api-version": ["2024-10-21"]}
    assert request["headers"]["api-key"] == "azure-key-42"
    assert request["body"]["stream"] is True and request["body"]["max_tokens"] == 50


async def test_wrong_port_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = client(base_url=url, model="smollm2", api_key=SECRET)
    with pytest.raises(LLMError, match="cannot connect") as info:
        await collect(llm)
    await llm.aclose()
    assert url in str(info.value) and SECRET not in str(info.value)


async def test_the_key_never_reaches_errors_or_logs(
    fake_server: FakeServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    monkeypatch.setenv("LLM_TEST_KEY", SECRET)
    options = {"base_url": url, "model": "needs-key", "api_key_env": "LLM_TEST_KEY"}
    opts_cls = type(registry.options("openai", {"model": "m"}))
    llm = client(**await resolve_options(opts_cls, options, EnvSecrets(["LLM_TEST_KEY"]), "llm"))
    await llm.prepare()
    with pytest.raises(LLMError, match="rejected the API key") as info:
        await collect(llm)
    await llm.aclose()
    assert fake_server.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"  # it was really sent
    text = "".join(traceback.format_exception(info.value))
    assert url in text and "$LLM_TEST_KEY" in text
    assert SECRET not in text and SECRET not in repr(info.value)
    assert caplog.records and SECRET not in caplog.text


async def test_unknown_model_and_timeout(fake_server: FakeServer) -> None:
    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    llm = client(base_url=url, model="missing")
    with pytest.raises(LLMError, match=r"404 for model 'missing'.*does not exist") as info:
        await collect(llm)
    assert url in str(info.value)
    await llm.aclose()
    llm = client(base_url=url, model="slow", timeout_s=0.3)
    start = time.perf_counter()
    with pytest.raises(LLMError, match=r"no answer from .* within 0.3 s"):
        await collect(llm)
    assert time.perf_counter() - start < 1.2
    await llm.aclose()


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="model"):
        registry.options("openai", {})
    with pytest.raises(ValidationError, match="api_version"):
        registry.options("openai", {"model": "m", "azure_endpoint": "https://x.openai.azure.com"})
    opts = registry.options("openai", {"model": "m", "api_key": SECRET})
    assert SECRET not in repr(opts) and SECRET not in str(opts.model_dump())


async def test_env_keys_need_the_operators_allow_list_and_never_parley_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_JWT_SECRET", SECRET)
    monkeypatch.setenv("LLM_TEST_KEY", SECRET)
    opts_cls = type(registry.options("openai", {"model": "m"}))
    allow = EnvSecrets(["PARLEY_JWT_SECRET", "LLM_TEST_KEY"])
    with pytest.raises(CredentialError, match="PARLEY_") as info:
        await resolve_options(opts_cls, {"model": "m", "api_key_env": "PARLEY_JWT_SECRET"}, allow, "llm")
    assert SECRET not in str(info.value)
    with pytest.raises(CredentialError, match="PARLEY_PROVIDER_ENV_ALLOW"):
        await resolve_options(opts_cls, {"model": "m", "api_key_env": "LLM_TEST_KEY"}, EnvSecrets([]), "llm")
    with pytest.raises(LLMError, match="was not resolved"):  # a reference is never read by the provider itself
        client(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="LLM_TEST_KEY")


async def test_the_guard_refuses_loopback_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")
    llm = client(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", api_key=SECRET)
    with pytest.raises(LLMError, match="loopback") as info:
        await llm.prepare()  # refused for good: the call does not start
    with pytest.raises(LLMError, match=r"refused: 127\.0\.0\.1 points at a loopback address"):
        await collect(llm)
    await llm.aclose()
    assert SECRET not in str(info.value)


def test_the_provider_name_resolves_in_a_fresh_interpreter() -> None:
    """Agent documents say ``provider: openai``; the class lives in ``openai_compat.py``."""
    code = "from parley.services.llm.base import registry; print(registry.get('openai').__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "OpenAICompatibleLLM"

"""MCP tools against a real MCP server (tests/support/mcp_server.py), over stdio and over streamable HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from parley.services.secrets import NoSecrets
from parley.tools.base import AgentTool, SideEffect, ToolContext, ToolError
from parley.tools.mcp_tool import McpToolConfig

SERVER = str(Path(__file__).parent / "support" / "mcp_server.py")
ALLOWED = ["lookup_patient", "slow", "explode", "die"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test server on streamable HTTP, on a port of its own (a ``die`` call kills it: one per test)."""
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the MCP test server did not start")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait(5)


def _config(server: dict[str, Any], **extra: Any) -> McpToolConfig:
    return McpToolConfig.model_validate(
        {
            "type": "mcp",
            "name": "clinic",
            "server": server,
            "tools": ALLOWED,
            "hidden_arguments": {"lookup_patient": {"clinic_key": "k-123"}},
            "side_effects": {"slow": "idempotent"},
            **extra,
        }
    )


STDIO = {"command": sys.executable, "args": [SERVER, "stdio"]}


@pytest.fixture(params=["stdio", "http"])
async def tools(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, AgentTool]]:
    server = STDIO if request.param == "stdio" else {"url": request.getfixturevalue("http_url")}
    made = await _config(server).create(NoSecrets())
    yield {t.name: t for t in made}
    for tool in made:
        await tool.aclose()


async def test_lists_allowed_tools_and_hides_fixed_arguments(tools: dict[str, AgentTool]) -> None:
    assert sorted(tools) == sorted(ALLOWED)  # admin_reset is on the server but not on the allow-list
    lookup = tools["lookup_patient"]
    assert lookup.description.startswith("Find a patient")
    assert "clinic_key" not in lookup.parameters["properties"]
    assert lookup.parameters["required"] == ["name"]
    assert tools["slow"].side_effect is SideEffect.IDEMPOTENT
    assert lookup.side_effect is SideEffect.READ
    result = await lookup.run({"name": "Ann"}, ToolContext())
    assert result.content == {"name": "Ann", "next": "Tuesday 10:00", "authorized": "yes"}


async def test_llm_cannot_override_hidden_argument(tools: dict[str, AgentTool]) -> None:
    result = await tools["lookup_patient"].run({"name": "Ann", "clinic_key": "guess"}, ToolContext())
    assert result.content["authorized"] == "yes"


async def test_server_error_is_failed_without_its_message(tools: dict[str, AgentTool]) -> None:
    with pytest.raises(ToolError) as info:
        await tools["explode"].run({}, ToolContext())
    assert info.value.kind == "failed"
    assert "hunter2" not in str(info.value)


async def test_server_dying_mid_call_is_prompt_and_sticks(tools: dict[str, AgentTool]) -> None:
    start = time.monotonic()
    with pytest.raises(ToolError) as info:
        await tools["die"].run({}, ToolContext())
    assert info.value.kind == "server-died"
    assert time.monotonic() - start < 3  # not the 8 s deadline
    with pytest.raises(ToolError) as again:
        await tools["lookup_patient"].run({"name": "Ann"}, ToolContext())
    assert again.value.kind == "server-died"


async def test_slow_tool_answers(tools: dict[str, AgentTool]) -> None:
    assert (await tools["slow"].run({"seconds": 0.2}, ToolContext())).content in ("done", {"result": "done"})


async def test_only_allowed_tools_that_exist() -> None:
    made = await _config(STDIO, tools=["lookup_patient", "no_such_tool"]).create(NoSecrets())
    try:
        assert [t.name for t in made] == ["lookup_patient"]
    finally:
        for tool in made:
            await tool.aclose()


@pytest.mark.parametrize(
    "server",
    [
        {"command": "/nonexistent/mcp-server"},
        {"command": sys.executable, "args": ["-c", "import time; time.sleep(30)"]},
    ],
    ids=["bad-command", "silent-server"],
)
async def test_connect_failure_is_connect_error_within_timeout(server: dict[str, Any]) -> None:
    start = time.monotonic()
    with pytest.raises(ToolError) as info:
        await _config(server, connect_timeout_s=1.5).create(NoSecrets())
    assert info.value.kind == "connect"
    assert time.monotonic() - start < 6.5  # the timeout, then the SDK's bounded stop of a server that ignores stdin


async def test_closed_port_is_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    start = time.monotonic()
    with pytest.raises(ToolError) as info:
        await _config({"url": f"http://127.0.0.1:{_free_port()}/mcp"}, connect_timeout_s=2).create(NoSecrets())
    assert info.value.kind == "connect"
    assert time.monotonic() - start < 5


async def test_guard_refuses_loopback_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")
    with pytest.raises(ValidationError, match=r"loopback|address"):
        _config({"url": "http://127.0.0.1:9/mcp"})
    with pytest.raises(ValidationError, match="metadata"):
        _config({"url": "http://169.254.169.254/mcp"})


def test_config_shape() -> None:
    with pytest.raises(ValidationError, match="either a command"):
        _config({})
    with pytest.raises(ValidationError, match="header_credentials"):
        _config({"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer x"}})
    with pytest.raises(ValidationError):
        McpToolConfig.model_validate({"type": "mcp", "server": STDIO, "tools": []})

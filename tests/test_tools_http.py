"""HTTP tools against a real local server: templates, HMAC signatures, idempotency keys, retries only where safe,
deadlines, and each way a tool server can misbehave (500, hang, not JSON, 20 MB, a redirect to a private address)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from parley.services.secrets import EnvSecrets
from parley.tools.base import ToolContext, ToolError
from parley.tools.http import HttpTool, HttpToolConfig

from .support.tool_server import SECRET, ToolServer, serve_tools

DAY = {"type": "object", "properties": {"day": {"type": "string"}}}


@pytest.fixture(scope="module")
def server() -> Iterator[ToolServer]:
    yield from serve_tools()


@pytest.fixture(autouse=True)
def _allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    monkeypatch.setenv("CLINIC_SECRET", SECRET)


async def _tool(**entry: Any) -> Any:
    config = HttpToolConfig.model_validate({"type": "http", "name": "t", "description": "a tool", **entry})
    (tool,) = await config.create(EnvSecrets(["CLINIC_SECRET"]))
    return tool


CONTEXT = ToolContext(variables={"caller": "+15550100", "agent": "clinic"})


async def test_templates_extraction_and_signature(server: ToolServer) -> None:
    tool = await _tool(
        url=server.url + "/patients/{{ pid }}",
        query={"phone": "{{ caller }}"},
        parameters={"type": "object", "properties": {"pid": {"type": "string"}}},
        extract={"patient_id": "patient.id"},
        result="patient",
        signing_secret_env="CLINIC_SECRET",
    )
    result = await tool.run({"pid": "a b?1"}, CONTEXT)  # URL-encoded into the path
    assert result.content == {"id": "a b?1", "phone": "+15550100"}
    assert result.variables == {"patient_id": "a b?1"}
    sent = server.seen.requests[-1]
    assert sent["signed"] and sent["query"] == {"phone": "+15550100"}
    assert sent["headers"]["idempotency-key"]


async def test_body_template_keeps_types_and_post_is_signed(server: ToolServer) -> None:
    tool = await _tool(
        method="POST",
        url=server.url + "/book",
        parameters={"type": "object", "properties": {"day": {"type": "string"}, "seats": {"type": "integer"}}},
        body={"day": "{{ day }}", "seats": "{{ seats }}", "who": "caller {{ caller }}"},
        side_effect="irreversible",
        signing_secret_env="CLINIC_SECRET",
        extract={"booking_id": "booking.id"},
    )
    result = await tool.run({"day": "Monday", "seats": 2}, CONTEXT)
    assert result.content["echo"] == {"day": "Monday", "seats": 2, "who": "caller +15550100"}
    assert result.variables == {"booking_id": "B7"}
    assert server.seen.requests[-1]["signed"]


async def test_a_wrong_secret_does_not_verify(server: ToolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINIC_SECRET", "another-secret-5678")
    tool = await _tool(url=server.url + "/patients/1", signing_secret_env="CLINIC_SECRET")
    await tool.run({}, CONTEXT)
    assert not server.seen.requests[-1]["signed"]


async def test_retry_on_503_keeps_the_idempotency_key(server: ToolServer) -> None:
    server.seen.flaky_left = 2
    before = len(server.seen.requests)
    tool = await _tool(url=server.url + "/flaky", retries=2)
    assert (await tool.run({}, CONTEXT)).content == {"ok": True}
    tries = server.seen.requests[before:]
    assert len(tries) == 3 and len({t["headers"]["idempotency-key"] for t in tries}) == 1


async def test_an_irreversible_post_is_not_retried(server: ToolServer) -> None:
    server.seen.flaky_left = 1
    before = len(server.seen.requests)
    tool = await _tool(method="POST", url=server.url + "/flaky", side_effect="irreversible", retries=3)
    with pytest.raises(ToolError) as err:
        await tool.run({}, CONTEXT)
    assert err.value.kind == "http-status" and len(server.seen.requests) - before == 1
    server.seen.flaky_left = 0


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/fail", "http-status"), ("/text", "not-json"), ("/huge", "too-large"), ("/to-private", "blocked-address")],
)
async def test_a_misbehaving_server_is_a_tool_error(server: ToolServer, path: str, kind: str) -> None:
    tool = await _tool(url=server.url + path, retries=0)
    started = time.monotonic()
    with pytest.raises(ToolError) as err:
        await tool.run({}, CONTEXT)
    assert err.value.kind == kind
    assert time.monotonic() - started < 5
    assert SECRET not in str(err.value)


async def test_a_hanging_server_is_cut_at_the_deadline(server: ToolServer) -> None:
    tool = await _tool(url=server.url + "/hang", deadline_s=0.5, retries=2)
    started = time.monotonic()
    with pytest.raises(ToolError) as err:
        await tool.run({}, CONTEXT)
    assert err.value.kind == "timeout" and time.monotonic() - started < 1.5


async def test_loopback_is_refused_unless_allowed(server: ToolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_OUTBOUND_ALLOW")
    with pytest.raises(ValueError, match="PARLEY_OUTBOUND_ALLOW"):  # a literal address: refused at load
        await _tool(url=server.url + "/patients/1")
    tool = await _tool(url=server.url.replace("127.0.0.1", "localhost") + "/patients/1", retries=0)
    with pytest.raises(ToolError) as err:  # a name that resolves to loopback: refused at connect
        await tool.run({}, CONTEXT)
    assert err.value.kind == "blocked-address"


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"url": "http://x.example/{{ nope }}"}, "nope"),
        ({"url": "ftp://x.example/"}, "http"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "http://x.example/", "parameters": {"type": "string"}}, "object"),
        ({"url": "http://x.example/", "extract": {"a": "[[["}}, "JMESPath"),
        ({"url": "http://x.example/", "name": "hang_up"}, "built-in"),
    ],
    ids=["unknown-placeholder", "scheme", "metadata", "schema", "jmespath", "reserved-name"],
)
def test_bad_entries_are_refused_at_load(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        HttpToolConfig.model_validate({"type": "http", "name": "t", "description": "d", **entry})


async def test_a_missing_secret_is_a_clear_error() -> None:
    config = HttpToolConfig.model_validate(
        {"type": "http", "name": "t", "description": "d", "url": "http://x.example/", "signing_secret_env": "NOPE"}
    )
    with pytest.raises(ToolError) as err:
        await config.create(EnvSecrets([]))
    assert err.value.kind == "secret" and "NOPE" in str(err.value)
    assert json.dumps({"kind": err.value.kind})


async def test_a_big_whole_answer_is_cut_for_the_llm(server: ToolServer) -> None:
    tool = await _tool(url=server.url + "/patients/1")
    assert isinstance(tool, HttpTool)
    big = tool._result_of(200, json.dumps({"rows": ["x" * 100] * 200}).encode()).content
    assert isinstance(big, str) and big.endswith("(truncated)") and len(big) < 4_100
    assert tool._result_of(200, b'{"a": 1}').content == {"a": 1}

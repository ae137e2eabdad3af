"""``parley test``: scenarios against a real agent mind (the rule-based ``canned`` LLM, so outcomes are known),
checked pass and fail for each expectation kind, reports, the CLI's exit codes, one audio-mode call (espeak-ng,
Silero, Whisper tiny, fast clock) and a simulated caller played by a real local HTTP server that speaks the
OpenAI chat-completions wire format (as tests/test_llm_openai.py fakes it), with no network beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from parley.testing import TurnResult, load_tests, run_file, run_text
from parley.testing.expect import CallResult, check_turn
from parley.testing.reports import junit_xml
from parley.testing.runner import Live, ScenarioRun, latency_check
from parley.testing.scenarios import Scenario, TestFileError, TurnExpect

from .support.served import agent, key, service, service_env, tenant_name
from .support.service import Service

__all__ = ["agent", "key", "service", "service_env", "tenant_name"]  # the shared `parley serve` fixtures

PARLEY = Path(sys.executable).parent / "parley"

AGENT: dict[str, Any] = {
    "kind": "agent",
    "name": "Canned Dental",
    "greeting": "Hello, Canned Dental.",
    "system_prompt": "You answer the phone.",
    "llm": {
        "provider": "canned",
        "options": {
            "default": "Sorry, I did not get that.",
            "rules": [
                {"match": ["hours", "open"], "reply": "We are open Monday to Friday, 8 am to 6 pm."},
                {"match": ["human", "person"], "reply": "Let me put you through.", "action": "transfer"},
                {"match": ["bye", "goodbye"], "reply": "Goodbye!", "action": "hang_up"},
            ],
        },
    },
    "stt": {"provider": "whisper"},
    "tts": {"provider": "espeak", "fallback": None},
    "actions": {"hang_up": True, "transfer_to": "+15550100"},
}


@pytest.fixture(scope="module")
def agent_doc() -> dict[str, Any]:
    return AGENT  # what the shared `parley serve` fixture creates for the --url test


def write_tests(tmp_path: Path, scenarios: list[dict[str, Any]], **extra: Any) -> Path:
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(AGENT), encoding="utf-8")
    path = tmp_path / "agent.tests.yaml"
    path.write_text(yaml.safe_dump({"agent": "agent.yaml", "scenarios": scenarios, **extra}), encoding="utf-8")
    return path


def scenario(name: str, *turns: tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "turns": [{"caller": c, "expect": e} for c, e in turns], **extra}


async def test_python_api_chains_checks_and_fails_clearly(tmp_path: Path) -> None:
    write_tests(tmp_path, [])
    result = await run_text(tmp_path / "agent.yaml", ["When are you open?", "bye"])
    assert result.greeting == "Hello, Canned Dental."
    expect = result.expect
    expect.next_turn().heard(contains="open").replied(contains="Monday", matches=r"8 ?am", not_contains="Sunday")
    expect.next_turn().replied(contains="Goodbye").acted("hang_up")
    with pytest.raises(AssertionError, match="expected turn 3, but the call had 2"):
        expect.next_turn()
    with pytest.raises(AssertionError, match=r"turn 1: reply should contain \['Sunday'\], got 'We are open"):
        result.expect.turn(1).replied(contains="Sunday")
    with pytest.raises(AssertionError, match="expected action 'transfer'"):
        result.expect.turn(2).acted("transfer")
    # the reply was committed to the context as heard: a call that continues after it still answers
    again = await run_text(tmp_path / "agent.yaml", ["hours?", "what?"])
    assert again.turns[1].reply == "Sorry, I did not get that."


async def test_yaml_expectations_pass_and_fail_on_a_real_agent(tmp_path: Path) -> None:
    good = scenario(
        "good",
        (
            "When are you open?",
            {"heard": "open", "reply": {"contains": "Monday", "matches": "8 ?am", "not_contains": "Sunday"}},
        ),
        ("Can I talk to a person?", {"action": "transfer", "reply": "put you through"}),
    )
    bad = scenario(
        "bad",
        (
            "When are you open?",
            {"heard": {"matches": "^closed"}, "reply": {"not_contains": "Monday"}, "action": "hang_up"},
        ),
        ("goodbye", {"reply": "Goodbye"}),
    )
    hung_up = scenario("ends early", ("bye", {"action": "hang_up"}), ("still there?", {"reply": "anything"}))
    result = await run_file(write_tests(tmp_path, [good, bad, hung_up]))
    by_name = {s.name: s for s in result.scenarios}
    assert by_name["good"].passed, by_name["good"].runs[0].failures
    assert by_name["bad"].failure_kinds() == {"action": 1, "heard": 1, "reply": 1}
    messages = [f.message for f in by_name["bad"].runs[0].failures]
    assert any("should not contain ['Monday']" in m for m in messages)
    assert by_name["ends early"].failure_kinds() == {"turns": 1}  # the agent hung up after turn 1
    assert not result.passed


def test_tool_node_dtmf_silence_and_barge_in_checks() -> None:
    turn = TurnResult(
        index=1,
        reply="Booked for Monday.",
        actions=[{"action": "send_dtmf", "target": "12#", "reason": ""}],
        events=[
            {"type": "tool", "tool": "book", "arguments": {"day": "Monday", "slot": {"hour": 9, "min": 0}}, "ok": True},
            {"type": "route", "from": "start", "to": "booking", "method": "llm"},
        ],
        voice_to_voice=0.8,
        interrupted=True,
    )
    passing = TurnExpect.model_validate(
        {
            "tool": {"name": "book", "arguments": {"day": "monday", "slot": {"hour": 9}}},
            "node": "booking",
            "dtmf": "12#",
            "silence_ms": 500,
            "barge_in": True,
        }
    )
    assert check_turn(turn, passing) == []
    failing = TurnExpect.model_validate(
        {
            "tool": {"name": "book", "arguments": {"day": "Tuesday"}},
            "node": "billing",
            "dtmf": "9",
            "silence_ms": 1000,
            "barge_in": False,
        }
    )
    failures = {f.kind: f.message for f in check_turn(turn, failing)}
    assert set(failures) == {"tool", "node", "dtmf", "silence", "barge_in"}
    assert "expected at least {'day': 'Tuesday'}" in failures["tool"]
    assert "after 800 ms" in failures["silence"]
    assert [f.kind for f in check_turn(turn, TurnExpect.model_validate({"tool": "cancel"}))] == ["tool"]
    CallResult(turns=[turn]).expect.next_turn().called_tool("book", day="Monday").routed_to("booking").sent_dtmf("12#")


def test_latency_budget_over_repeats() -> None:
    spec = {"name": "l", "mode": "audio", "turns": [{"caller": "hi"}], "latency": {"voice_to_voice": {"p95_ms": 700}}}
    s = Scenario.model_validate(spec)
    runs = [ScenarioRun(i, CallResult(turns=[TurnResult(1, voice_to_voice=v)])) for i, v in enumerate([0.4, 0.5, 0.9])]
    stats, failures = latency_check(s, runs)
    assert stats["p50_ms"] == 500.0 and [f.kind for f in failures] == ["latency"]
    assert "over the budget of 700 ms" in failures[0].message
    assert latency_check(s, runs[:2])[1] == []
    text = Scenario.model_validate({**spec, "mode": "text"})
    assert (
        "need `mode: audio`" in latency_check(text, [ScenarioRun(0, CallResult(turns=[TurnResult(1)]))])[1][0].message
    )


async def test_repeat_reports_and_mocks(tmp_path: Path) -> None:
    mocks = {"book": {"ok": True, "day": "Monday"}}
    s = scenario("hours", ("When are you open?", {"reply": "Saturday"}), repeat=2, tool_mocks=mocks)
    result = await run_file(write_tests(tmp_path, [s]), repeat=3)
    (only,) = result.scenarios
    assert len(only.runs) == 3 and only.pass_rate == 0.0 and only.failure_kinds() == {"reply": 3}
    assert all(r.tool_mocks == mocks for r in only.runs)
    root = ET.fromstring(junit_xml(result))
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "3"
    cases = root.findall("testsuite/testcase")
    assert [c.get("name") for c in cases] == ["hours #1", "hours #2", "hours #3"]
    assert cases[0].find("failure").get("type") == "reply"  # type: ignore[union-attr]
    data = json.loads(json.dumps(result.as_dict()))
    assert data["passed"] is False and data["scenarios"][0]["pass_rate"] == 0.0
    assert data["scenarios"][0]["runs"][0]["turns"][0]["reply"].startswith("We are open")


def test_bad_files_are_refused(tmp_path: Path) -> None:
    path = write_tests(tmp_path, [{"name": "x", "turns": [{"caller": "hi", "wav": "a.wav"}]}])
    with pytest.raises(TestFileError, match="exactly one of caller, wav"):
        load_tests(path)
    path.write_text("agent: agent.yaml\nscenarios: [{name: x, turns: [{caller: hi, expect: {reply: {contain: a}}}]}]\n")
    with pytest.raises(TestFileError, match="contain"):
        load_tests(path)


def test_cli_exit_codes_and_outputs(tmp_path: Path) -> None:
    path = write_tests(
        tmp_path, [scenario("ok", ("hours?", {"reply": "Monday"})), scenario("no", ("hours?", {"reply": "Sunday"}))]
    )
    env_cmd = [str(PARLEY), "test", str(path)]
    ok = subprocess.run([*env_cmd, "-k", "ok"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    junit, js = tmp_path / "out.xml", tmp_path / "out.json"
    bad = subprocess.run(
        [*env_cmd, "--junit", str(junit), "--json", str(js)], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and "reply should contain ['Sunday']" in bad.stdout.replace("\n", " ")
    assert ET.parse(junit).getroot().get("failures") == "1"
    assert [s["passed"] for s in json.loads(js.read_text())["scenarios"]] == [True, False]
    broken = tmp_path / "broken.tests.yaml"
    broken.write_text("agent: agent.yaml\n")
    assert subprocess.run([str(PARLEY), "test", str(broken)], capture_output=True, timeout=60).returncode == 2


def test_example_file_loads() -> None:
    tests = load_tests(Path(__file__).parents[1] / "examples/agents/receptionist.tests.yaml")
    assert tests.path(tests.agent).is_file() and tests.scenarios


async def test_audio_mode_phone_line_fast(tmp_path: Path) -> None:
    s = scenario(
        "by voice", ("When are you open?", {"heard": {"matches": "open"}, "reply": "Monday"}),
        mode="audio", phone=True, noise_db=-60, latency={"voice_to_voice": {"p95_ms": 5000}},
    )  # fmt: skip
    s["turns"][0]["pause_ms"] = 2500
    result = await run_file(write_tests(tmp_path, [s]), work=tmp_path / "work")
    (only,) = result.scenarios
    assert only.passed, [f.message for r in only.runs for f in r.failures] + [f.message for f in only.failures]
    assert only.latency["samples"] == 1.0 and (tmp_path / "work/by-voice/call-0.wav").is_file()


class _FakeLLM(ThreadingHTTPServer):
    daemon_threads = True
    caller_lines: list[str]
    verdict: str
    seen: list[dict[str, Any]]


class _Chat(BaseHTTPRequestHandler):
    server: _FakeLLM

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(body)
        if body.get("stream"):  # the agent's own LLM: call `book`, then answer from its result
            return self.tool_flow(body["messages"])
        text = self.server.verdict if body["model"] == "judge" else self.server.caller_lines.pop(0)
        data = json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def tool_flow(self, messages: list[dict[str, Any]]) -> None:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
            return f"data: {json.dumps(data)}\n\n".encode()

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if messages[-1]["role"] == "tool":
            day = json.loads(messages[-1]["content"]).get("day", "?")
            self.wfile.write(chunk({"role": "assistant", "content": f"You are booked for {day}."}) + chunk({}, "stop"))
        else:
            arguments = json.dumps({"day": "Monday", "time": "9:00"})
            call = {"index": 0, "id": "t1", "type": "function", "function": {"name": "book", "arguments": arguments}}
            self.wfile.write(chunk({"role": "assistant", "tool_calls": [call]}) + chunk({}, "tool_calls"))
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeLLM]:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    server = _FakeLLM(("127.0.0.1", 0), _Chat)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_simulated_caller_judged(tmp_path: Path, fake_llm: _FakeLLM) -> None:
    url = f"http://127.0.0.1:{fake_llm.server_port}/v1"
    sim = {
        "name": "wants hours", "persona": "A busy parent.", "goal": "Learn the opening hours.",
        "success": ["The agent gave the opening hours", "The agent booked a visit"], "max_turns": 3,
        "caller_llm": {"base_url": url, "model": "caller"}, "judge": {"base_url": url, "model": "judge"},
    }  # fmt: skip
    fake_llm.caller_lines = ["When are you open?", "[DONE]"]
    fake_llm.verdict = json.dumps({"criteria": [{"met": True, "why": "Monday"}, {"met": False, "why": "no booking"}]})
    result = await run_file(write_tests(tmp_path, [], simulated=[sim]))
    (only,) = result.scenarios
    run = only.runs[0]
    assert run.result is not None and run.result.turns[0].reply.startswith("We are open")
    assert [f.kind for f in run.failures] == ["judge"] and "booked a visit" in run.failures[0].message
    judged = fake_llm.seen[-1]["messages"][1]["content"]
    assert "caller: When are you open?" in judged and "agent: We are open Monday" in judged
    assert fake_llm.seen[0]["messages"][1] == {"role": "user", "content": "Hello, Canned Dental."}


async def test_against_a_running_server_over_the_talk_socket(
    tmp_path: Path, service: Service, key: str, agent: dict[str, Any]
) -> None:
    url = service.url.replace("http", "ws") + f"/v1/agents/{agent['id']}/talk"
    s = scenario(
        "live",
        ("What are your opening hours?", {"heard": "hours", "reply": "Monday"}),
        ("Thank you, goodbye.", {"action": "hang_up", "reply": "Sunday"}),
        voice="gb-male",
    )
    result = await run_file(write_tests(tmp_path, [s]), live=Live(url, key))
    (run,) = result.scenarios[0].runs
    assert run.result is not None and run.result.greeting == "Hello, Canned Dental."
    assert [f.kind for f in run.failures] == ["reply"], [
        t.heard for t in run.result.turns
    ]  # turn 2 said Goodbye, not Sunday
    assert run.result.end_reason == "agent-hangup" and run.result.turns[0].voice_to_voice is not None, [
        t.as_dict() for t in run.result.turns
    ]


async def test_tool_calls_answered_by_mocks(tmp_path: Path, fake_llm: _FakeLLM) -> None:
    url = f"http://127.0.0.1:{fake_llm.server_port}/v1"
    mocks = {"book": {"booked": True, "day": "Monday"}}
    book = scenario(
        "books",
        (
            "Book me for Monday.",
            {"tool": {"name": "book", "arguments": {"day": "monday"}}, "reply": "booked for Monday"},
        ),
        tool_mocks=mocks,
    )
    wrong = scenario(
        "wrong tool", ("Book me.", {"tool": {"name": "book", "arguments": {"day": "Friday"}}}), tool_mocks=mocks
    )
    path = write_tests(tmp_path, [book, wrong])
    doc = {**AGENT, "llm": {"provider": "openai", "options": {"base_url": url, "model": "m", "preconnect": False}}}
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = await run_file(path)
    ok, bad = result.scenarios
    assert ok.passed, ok.runs[0].failures
    assert ok.runs[0].result is not None and ok.runs[0].result.turns[0].tool_calls()[0]["result"] is not None
    assert (
        bad.failure_kinds() == {"tool": 1} and "expected at least {'day': 'Friday'}" in bad.runs[0].failures[0].message
    )

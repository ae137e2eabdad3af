"""The embedded-model self-check: a native crash in a model library is a logged, named result, never our death.

The crash is real: the self-check child process is killed by SIGSEGV at the chosen stage (the fault-injection
variable ``PARLEY_SELFCHECK_CRASH``), exactly what llama.cpp's AMX path did on Sapphire Rapids hosts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets

from parley.services.selfcheck import run_child
from tests.support.service import running_service

AGENT = {
    "name": "default-llm",
    "system_prompt": "You are a receptionist.",
    "greeting": "Hello.",
    "tts": {"provider": "tone"},
    "vad": {"provider": "energy"},
}


def test_each_stage_runs_here() -> None:
    """On this machine every embedded model loads and runs one step (the check CI and newcomers rely on)."""
    results = {r.stage: r for r in run_child()}
    assert set(results) == {"vad", "stt", "llm", "tts"}
    assert all(r.ok for r in results.values()), results


def test_a_crashing_stage_is_named_and_the_rest_still_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_SELFCHECK_CRASH", "stt")
    results = {r.stage: r for r in run_child()}
    assert not results["stt"].ok and "SIGSEGV" in results["stt"].detail
    assert results["vad"].ok and results["llm"].ok and results["tts"].ok  # checked in a second child


async def _talk(url: str) -> tuple[int, str]:
    try:
        async with websockets.connect(url) as ws:
            await asyncio.wait_for(ws.recv(), 30)
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason
    except websockets.InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode(errors="replace") if exc.response.body else ""
    return 0, ""


def test_serve_survives_a_crashing_llm_and_says_what_to_do(tmp_path: Path) -> None:
    with running_service(tmp_path / "data", PARLEY_SELFCHECK_CRASH="llm") as service:
        log = service.log.read_text()
        assert "embedded_model_unavailable" in log and "stage=llm" in log and "SIGSEGV" in log
        assert "Segmentation fault" not in log
        key = service.create_key("selfcheck")
        with service.client(key) as c:
            assert c.get("/health").status_code == 200
            agent = c.post("/v1/agents", json=AGENT).json()
            token = c.post(f"/v1/agents/{agent['id']}/talk-token").json()
            canned = c.post("/v1/agents", json={**AGENT, "name": "canned", "llm": {"provider": "canned"}}).json()
            canned_token = c.post(f"/v1/agents/{canned['id']}/talk-token").json()
        ws = service.url.replace("http", "ws")
        code, reason = asyncio.run(_talk(ws + token["url"]))
        assert code in (1011, 500) and "cannot run on this host" in reason

        # agents that do not use the broken model still talk
        async def first_event() -> dict[str, object]:
            async with websockets.connect(ws + canned_token["url"]) as sock:
                return dict(json.loads(await asyncio.wait_for(sock.recv(), 30)))

        assert asyncio.run(first_event())["type"] == "call"

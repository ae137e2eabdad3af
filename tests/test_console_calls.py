"""The console's calls views in a real browser (issue 14): a real talk call followed live and hung up from the
console, then found in the list (filters narrow it, CSV export downloads) and opened: the waveform, the
transcript (a click seeks the audio), the speaking timeline and a latency waterfall whose numbers are the API
record's; another tenant's call id is "not found".

One `parley serve` (SQLite, the model-free receptionist of tests/support/served.py) and one call for the module.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from playwright.sync_api import Page, expect

from parley.calls.synthetic_caller import speak

from .support.browser import Console, browser, browsers, console, playwright, run_async, screenshot, wait_for
from .support.service import Service

__all__ = ["browser", "browsers", "console", "playwright"]  # fixtures, imported for pytest
QUESTION = "What are your opening hours on Saturday?"


@dataclass
class LiveCall:
    """A talk call streaming in a thread: the question, then silence until the console hangs it up."""

    thread: threading.Thread
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


async def _talk(url: str, pcm: np.ndarray, events: list[dict[str, Any]]) -> None:
    """Streams ``pcm`` at real time and keeps the events until the server ends the call (or the audio runs out)."""
    async with websockets.connect(url, max_size=2**20) as ws:

        async def send() -> None:
            start = time.monotonic()
            try:
                for k in range(len(pcm) // 320):
                    await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
                    await ws.send(pcm[k * 320 : (k + 1) * 320].astype("<i2").tobytes())
                await ws.send(json.dumps({"type": "end"}))
            except websockets.ConnectionClosed:
                return

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, str):
                    events.append(json.loads(message))
                    if events[-1]["type"] == "end":
                        return

        receiving = asyncio.ensure_future(receive())
        sending = asyncio.ensure_future(send())
        await asyncio.wait_for(receiving, 120)
        sending.cancel()


@pytest.fixture(scope="module")
def live_call(service: Service, key: str, agent: dict[str, Any]) -> Iterator[LiveCall]:
    with service.client(key) as c:
        token = c.post(f"/v1/agents/{agent['id']}/talk-token").json()
    question = run_async(speak(QUESTION, "joe-quick"))
    pcm = np.concatenate([np.zeros(16000, np.int16), question, np.zeros(16000 * 40, np.int16)])
    call = LiveCall(threading.Thread())

    def main() -> None:
        try:
            asyncio.run(_talk(service.url.replace("http", "ws") + token["url"], pcm, call.events))
        except BaseException as exc:  # reported by the tests
            call.errors.append(exc)

    call.thread = threading.Thread(target=main, name="talk-call", daemon=True)
    call.thread.start()
    yield call
    call.thread.join(60)


@pytest.fixture(scope="module")
def ended_call(service: Service, key: str, live_call: LiveCall) -> dict[str, Any]:
    """The call's record once it has ended (hung up by the live test, or at the end of its audio)."""
    live_call.thread.join(90)
    assert not live_call.errors, live_call.errors
    call_id = live_call.events[0]["call_id"]
    with service.client(key) as c:
        for _ in range(100):
            call = c.get(f"/v1/calls/{call_id}").json()
            if call["status"] != "active":
                return dict(call)
            time.sleep(0.1)
    raise AssertionError(f"the call did not end: {call}")


def _open(console: Console, service: Service, key: str, route: str) -> Page:
    page = console(service, key, route=route)
    page.set_default_timeout(20_000)
    return page


def test_live_call_transcript_and_hang_up(console: Console, service: Service, key: str, live_call: LiveCall) -> None:
    page = _open(console, service, key, "#/live")
    row = page.get_by_test_id("live-calls-row")
    expect(row).to_have_count(1, timeout=20_000)
    row.click()
    caller = page.locator("[data-testid=live-line][data-speaker=caller][data-final=true]")
    expect(caller).to_contain_text("opening hours", ignore_case=True, timeout=30_000)
    expect(page.locator("[data-testid=live-line][data-speaker=agent]").last).to_contain_text("nine to five")
    expect(page.get_by_test_id("live-v2v").first).to_be_visible()
    screenshot(page, "live-call")
    page.get_by_test_id("hangup").click()
    page.get_by_test_id("hangup").click()  # the second click confirms
    expect(page.get_by_test_id("live-ended")).to_contain_text("hung_up_by_operator", timeout=20_000)
    live_call.thread.join(30)
    assert live_call.events[-1]["type"] == "end"
    assert page.parley_errors == []  # type: ignore[attr-defined]


def test_calls_list_filters_and_csv_export(
    console: Console, service: Service, key: str, ended_call: dict[str, Any]
) -> None:
    page = _open(console, service, key, "#/calls")
    rows = page.get_by_test_id("calls-row")
    expect(rows).to_have_count(1)
    expect(page.get_by_test_id("calls-total")).to_have_attribute("data-total", "1")
    screenshot(page, "calls")

    page.get_by_test_id("filter-q").fill("opening hours")
    page.get_by_test_id("filter-apply").click()
    expect(page).to_have_url(re.compile(r"q=opening"))
    expect(rows).to_have_count(1)
    page.get_by_test_id("filter-status").select_option("active")
    page.get_by_test_id("filter-apply").click()
    expect(page.get_by_test_id("calls-empty")).to_be_visible()
    page.get_by_test_id("filter-status").select_option("")
    page.get_by_test_id("filter-min-duration").fill("3600")
    page.get_by_test_id("filter-apply").click()
    expect(page.get_by_test_id("calls-empty")).to_be_visible()
    page.get_by_test_id("filter-clear").click()
    page.get_by_test_id("filter-end-reason").fill(ended_call["end_reason"])
    page.get_by_test_id("filter-apply").click()
    expect(rows).to_have_count(1)

    with page.expect_download() as download:
        page.get_by_test_id("export-csv").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in table] == [ended_call["id"]]
    assert table[0]["end_reason"] == ended_call["end_reason"]
    rows.first.click()
    expect(page.get_by_test_id("call-facts")).to_be_visible()
    assert page.evaluate("location.hash") == f"#/calls/{ended_call['id']}"


def stages(times: dict[str, float]) -> dict[str, tuple[float, float]]:
    """The waterfall's stages from a turn's times, as lib/waterfall.js defines them: {key: (start, duration)}."""
    t = times
    origin = t.get("speech_end", min(t.values()))
    spans = {
        "vad": (t.get("speech_end"), t.get("stt_start")),
        "pause": (t.get("stt_start"), t.get("end_of_turn")),
        "stt": (t.get("stt_start"), t.get("stt_final")),
        "llm": (t.get("stt_final"), t.get("llm_first_token")),
        "tts": (t.get("llm_first_token"), t.get("tts_first_audio")),
        "playout": (
            None if "tts_first_audio" not in t else max(t["tts_first_audio"], t.get("end_of_turn", -1e9)),
            t.get("first_audio_out"),
        ),
    }
    return {
        k: (round(a - origin, 3), round(b - a, 3))
        for k, (a, b) in spans.items()
        if a is not None and b is not None and b >= a
    }


def test_call_detail_waveform_transcript_timeline_waterfall(
    console: Console, service: Service, key: str, ended_call: dict[str, Any]
) -> None:
    call = ended_call
    page = _open(console, service, key, f"#/calls/{call['id']}")
    expect(page.locator("[data-testid=waveform] canvas").first).to_be_attached()
    lines = page.get_by_test_id("transcript-line")
    expect(lines.first).to_be_visible()
    speakers = lines.evaluate_all("els => els.map(e => e.dataset.speaker)")
    assert speakers[:3] == ["agent", "caller", "agent"], speakers  # greeting, question, answer

    caller = page.locator("[data-testid=transcript-line][data-speaker=caller]").first
    t = float(caller.get_attribute("data-t") or "nan")
    assert t == pytest.approx(call["turns"][1]["times"]["speech_start"], abs=1e-3)
    caller.click()
    now = wait_for(
        page,
        "(t) => { const a = document.querySelector('[data-testid=call-audio]');"
        " return a && Math.abs(a.currentTime - t) < 0.05 && a.currentTime + 1 }",
        arg=t,
    )
    assert now - 1 == pytest.approx(t, abs=0.05)
    expect(caller).to_have_class(re.compile(r"\bplaying\b"))

    kinds = page.get_by_test_id("timeline-item").evaluate_all("els => els.map(e => e.dataset.kind)")
    for kind in ("caller:speech", "caller:eot", "agent:speech"):
        assert kind in kinds, kinds

    rows = page.get_by_test_id("waterfall-turn")
    shown = {int(r.get_attribute("data-turn") or -1): r for r in rows.all()}
    timed = [turn for turn in call["turns"] if turn["times"]]
    assert sorted(shown) == [turn["turn"] for turn in timed]
    for turn in timed:
        row = shown[turn["turn"]]
        v2v = row.get_attribute("data-v2v")
        assert (float(v2v) if v2v else None) == turn["voice_to_voice"]
        got = {
            s.get_attribute("data-stage"): (
                float(s.get_attribute("data-start") or "nan"),
                float(s.get_attribute("data-dur") or "nan"),
            )
            for s in row.get_by_test_id("waterfall-stage").all()
        }
        want = stages(turn["times"])
        assert set(got) == set(want), turn
        for k, (start, dur) in want.items():  # both rounded to the millisecond, each its own way
            assert got[k] == pytest.approx((start, dur), abs=1.5e-3), (turn, k)
    assert set(stages(call["turns"][1]["times"])) == {"vad", "pause", "stt", "llm", "tts", "playout"}
    v2vs = [turn["voice_to_voice"] for turn in call["turns"] if turn["voice_to_voice"] is not None]
    summary = page.get_by_test_id("waterfall-summary")
    assert float(summary.get_attribute("data-p50") or "nan") == pytest.approx(float(np.percentile(v2vs, 50)))
    assert float(summary.get_attribute("data-p95") or "nan") == pytest.approx(float(np.percentile(v2vs, 95)))
    worst = max(
        (turn for turn in call["turns"] if turn["voice_to_voice"] is not None), key=lambda x: x["voice_to_voice"]
    )
    assert summary.get_attribute("data-worst-turn") == str(worst["turn"])
    biggest = max(stages(worst["times"]).items(), key=lambda kv: kv[1][1])[0]
    assert summary.get_attribute("data-worst-stage") == biggest

    expect(page.get_by_test_id("event-row")).to_have_count(min(100, len(call["events"])))
    screenshot(page, "call-detail")
    with page.expect_download() as download:
        page.get_by_test_id("download-json").click()
    saved = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert saved["id"] == call["id"] and len(saved["turns"]) == len(call["turns"]) and saved["events"]
    assert page.parley_errors == []  # type: ignore[attr-defined]


def test_another_tenants_call_is_not_found(console: Console, service: Service, ended_call: dict[str, Any]) -> None:
    other = service.create_key("console-calls-other-tenant")
    with service.client(other) as c:
        assert c.get(f"/v1/calls/{ended_call['id']}").status_code == 404
    page = _open(console, service, other, f"#/calls/{ended_call['id']}")
    expect(page.get_by_test_id("not-found")).to_be_visible()
    expect(page.get_by_test_id("waveform")).to_have_count(0)
    screenshot(page, "call-not-found")

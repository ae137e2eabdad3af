"""Talking to an agent in the console, in a real Chromium whose fake microphone plays a spoken question.

One `parley serve` (SQLite, embedded models) for the module; the agent is a model-free receptionist (Whisper
hears, canned rules answer, espeak speaks) created through the API, as the console's user would have. The
console's talk view runs parley-talk.js: microphone → AudioWorklet (device rate → 16 kHz PCM16) → WebSocket, and
the agent's audio back through the worklet's jitter buffer. What the page played is read from the client's own
counters (``window.parleyTalk.stats``, mirrored on the view's ``data-*`` attributes).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from parley.audio import write_wav

from .support.audio import espeak
from .support.browser import Browsers, Console, browser, browsers, console, playwright, run_async, screenshot
from .support.served import AGENT
from .support.service import ROOT, Service

__all__ = ["browser", "browsers", "console", "playwright"]  # fixtures, imported for pytest

LONG_REPLY = (  # long enough to speak over
    "A cleaning costs eighty dollars, a check-up with x-rays costs one hundred and twenty dollars, and a "
    "whitening costs three hundred dollars, and we take every major insurance plan, so please ask us."
)
RULES = [
    {"match": ["hours", "open", "opening"], "reply": "We are open nine to five on weekdays."},
    {"match": ["cost", "price", "prices", "cleaning"], "reply": LONG_REPLY},
    {"match": ["parking", "park"], "reply": "Yes, behind the building."},
]
RECEPTIONIST: dict[str, Any] = {
    **AGENT,
    "name": "Console Receptionist",
    "llm": {"provider": "canned", "options": {"rules": RULES, "default": "Sorry, could you say that again?"}},
}
RATE = 16000


def _pcm(*parts: np.ndarray | float) -> np.ndarray:
    """Speech and pauses (seconds) in order, one 16 kHz track."""
    return np.concatenate([np.zeros(int(p * RATE), np.int16) if isinstance(p, float) else p for p in parts])


@pytest.fixture(scope="module")
def example_site() -> Iterator[str]:
    """examples/talk-web served from another origin, as its comment says (any static server)."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(ROOT / "examples" / "talk-web"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def service_env(example_site: str) -> dict[str, str]:
    """The example page's origin may call the API (PARLEY_CORS_ORIGINS, as docs/talk.md says)."""
    return {"PARLEY_CORS_ORIGINS": json.dumps([example_site])}


@pytest.fixture(scope="module")
def agent(service: Service, key: str) -> dict[str, Any]:
    with service.client(key) as c:
        created = c.post("/v1/agents", json=RECEPTIONIST)
        assert created.status_code == 201, created.text
        return dict(created.json())


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fake microphone's recordings: a question, and a question then words spoken over its long answer."""
    d = tmp_path_factory.mktemp("console-talk-audio")
    question = espeak("What are your opening hours?", "en-us", wpm=160)  # espeak: a second, where Piper takes ten
    prices = espeak("How much does a cleaning cost?", "en-us", wpm=160)
    barge = espeak("Sorry, wait. Do you have parking?", "en-us", wpm=160)
    tracks = {"question": _pcm(2.0, question, 10.0), "barge-in": _pcm(2.0, prices, 3.0, barge, 10.0)}
    out = {}
    for name, pcm in tracks.items():
        write_wav(d / f"{name}.wav", pcm, RATE)
        out[name] = d / f"{name}.wav"
    return out


@pytest.fixture(scope="module")
def question_browser(browsers: Browsers, wavs: dict[str, Path]) -> Browser:
    return browsers(audio=wavs["question"])


def open_talk(console: Console, service: Service, key: str, agent: dict[str, Any], **kw: Any) -> Page:
    page = console(service, key, route=f"#/talk/{agent['id']}", **kw)
    expect(page.get_by_test_id("talk-start")).to_be_enabled()
    return page


def stats(page: Page) -> dict[str, Any]:
    return dict(page.evaluate("() => ({...window.parleyTalk.stats, state: window.parleyTalk.state})"))


def test_talk_in_the_browser_transcribes_plays_and_times_each_turn(
    console: Console, question_browser: Browser, service: Service, key: str, agent: dict[str, Any]
) -> None:
    page = open_talk(console, service, key, agent, browser=question_browser)
    screenshot(page, "talk-idle")
    page.get_by_test_id("talk-start").click()
    view = page.get_by_test_id("talk-view")
    expect(view).to_have_attribute("data-state", "live", timeout=15_000)
    final = page.locator('[data-testid="transcript-caller"][data-final="1"]')
    expect(final.first).to_contain_text("opening hours", ignore_case=True, timeout=30_000)
    expect(page.get_by_test_id("transcript-agent").last).to_contain_text("nine to five", timeout=30_000)
    expect(page.get_by_test_id("turn-latency").first).to_contain_text("voice-to-voice", timeout=30_000)
    latency = page.get_by_test_id("talk-latency")
    expect(latency).not_to_have_attribute("data-seconds", "", timeout=30_000)
    seconds = float(latency.get_attribute("data-seconds") or "nan")
    assert 0 < seconds < 10, seconds
    counters = stats(page)
    assert counters["bytesReceived"] > RATE * 2 * 2  # the greeting and the answer: seconds of audio
    assert counters["bytesSent"] > RATE * 2 * 5  # the microphone streamed at real time
    assert counters["framesPlayed"] > 100, counters  # over 2 s of agent audio went to the speakers
    assert int(view.get_attribute("data-frames-played") or 0) > 100
    screenshot(page, "talk-live")
    page.get_by_test_id("dtmf-5").click()
    page.get_by_test_id("talk-hangup").click()
    expect(page.get_by_test_id("talk-status")).to_contain_text("Call ended: caller-hangup", timeout=15_000)
    call_id = view.get_attribute("data-call-id")
    assert call_id
    assert not [e for e in page.parley_errors if "pageerror" in e], page.parley_errors  # type: ignore[attr-defined]

    with service.client(key) as c:
        listed = c.get("/v1/calls", params={"agent_id": agent["id"]}).json()
        assert call_id in [x["id"] for x in listed]
        call = c.get(f"/v1/calls/{call_id}").json()
    assert call["transport"] == "talk" and call["end_reason"] == "caller-hangup"
    assert "opening hours" in call["turns"][1]["caller_text"].lower()
    metrics = next(t for t in call["turns"] if t["turn"] == 1)
    assert metrics["voice_to_voice"] == pytest.approx(seconds, abs=0.002)  # the latency shown is the API's
    assert any(e["kind"] == "dtmf" and e["data"].get("digit") == "5" for e in call["events"]), call["events"]
    page.get_by_test_id("talk-call-link").click()
    expect(page).to_have_url(f"{service.url}/#/calls/{call_id}")


def test_barge_in_flushes_the_agent_audio_queued_in_the_browser(
    console: Console, browsers: Browsers, wavs: dict[str, Path], service: Service, key: str, agent: dict[str, Any]
) -> None:
    """With an 800 ms jitter buffer (?buffer=800) most of a second of the answer is queued when the event comes."""
    page = console(service, key, browser=browsers(audio=wavs["barge-in"]), route=f"#/talk/{agent['id']}?buffer=800")
    page.get_by_test_id("talk-start").click()
    view = page.get_by_test_id("talk-view")
    expect(view).to_have_attribute("data-state", "live", timeout=15_000)
    page.evaluate(
        """() => { window.bargeIn = [];
          parleyTalk.on('interruption', () => {
            const before = parleyTalk.stats.framesPlayed;
            setTimeout(() => window.bargeIn.push({ before, after: parleyTalk.stats.framesPlayed,
              queuedMs: parleyTalk.stats.queuedMs, flushes: parleyTalk.stats.flushes }), 700);
          }); }"""
    )
    expect(page.get_by_test_id("transcript-agent").first).to_be_visible(timeout=30_000)
    page.wait_for_function("() => window.bargeIn.length > 0", timeout=40_000)
    seen = page.evaluate("() => window.bargeIn[0]")
    counters = stats(page)
    assert counters["interruptions"] >= 1 and counters["flushes"] >= 1, counters
    assert counters["flushedMs"] > 100, counters  # queued agent audio was dropped, not played
    assert seen["queuedMs"] < 60, seen  # nothing of the old answer left queued
    assert seen["after"] - seen["before"] <= 10, seen  # and it stopped playing at once (≤ 200 ms after the event)
    expect(page.locator(".line.agent.interrupted").first).to_be_visible(timeout=20_000)
    screenshot(page, "talk-barge-in")
    page.get_by_test_id("talk-hangup").click()
    expect(page.get_by_test_id("talk-status")).to_contain_text("Call ended", timeout=15_000)


def test_a_refused_microphone_says_so_and_calls_nobody(
    console: Console, browsers: Browsers, service: Service, key: str, agent: dict[str, Any]
) -> None:
    page = open_talk(console, service, key, agent, browser=browsers(fake_ui=False), permissions=None)
    before = _calls(service, key)
    page.get_by_test_id("talk-start").click()
    expect(page.get_by_test_id("talk-error")).to_contain_text("microphone access was refused", timeout=15_000)
    expect(page.get_by_test_id("talk-start")).to_be_enabled()
    screenshot(page, "talk-microphone-refused")
    assert _calls(service, key) == before


def test_a_dropped_socket_shows_call_ended_with_its_reason(
    console: Console, question_browser: Browser, service: Service, key: str, agent: dict[str, Any]
) -> None:
    """The server refuses the session after the handshake (a spent token): 1008 and its reason reach the page."""
    page = open_talk(console, service, key, agent, browser=question_browser)
    with service.client(key) as c:
        spent = c.post(f"/v1/agents/{agent['id']}/talk-token").json()
    _spend(service, spent["url"])
    page.route("**/talk-token", lambda route: route.fulfill(json=spent))
    page.get_by_test_id("talk-start").click()
    status = page.get_by_test_id("talk-status")
    expect(status).to_contain_text("call ended:", timeout=15_000)
    expect(status).to_contain_text("(code 1008)")
    expect(page.get_by_test_id("talk-error")).to_contain_text("call ended:")
    screenshot(page, "talk-dropped")


def test_talk_to_the_unsaved_draft(
    console: Console, browsers: Browsers, wavs: dict[str, Path], service: Service, key: str, agent: dict[str, Any]
) -> None:
    """?draft=1 sends the editor's draft (sessionStorage) with the talk token: the draft's greeting is heard."""
    page = console(service, key, browser=browsers(audio=wavs["question"]))
    draft = {**RECEPTIONIST, "greeting": "This is the draft speaking."}
    page.evaluate("([k, d]) => sessionStorage.setItem(k, JSON.stringify(d))", [f"parley.draft.{agent['id']}", draft])
    page.evaluate("(r) => { location.hash = r }", f"#/talk/{agent['id']}?draft=1")
    expect(page.get_by_test_id("talk-draft-badge")).to_be_visible()
    page.get_by_test_id("talk-start").click()
    expect(page.get_by_test_id("transcript-agent").first).to_contain_text("draft speaking", timeout=30_000)
    call_id = page.get_by_test_id("talk-view").get_attribute("data-call-id")
    page.get_by_test_id("talk-hangup").click()
    expect(page.get_by_test_id("talk-status")).to_contain_text("Call ended", timeout=15_000)
    with service.client(key) as c:
        assert c.get(f"/v1/calls/{call_id}").json()["agent_version"] == agent["version"]
        saved = c.get(f"/v1/agents/{agent['id']}").json()
        assert saved["version"] == agent["version"] and saved["document"]["greeting"] == RECEPTIONIST["greeting"]


def test_an_operator_hang_up_ends_the_call_in_the_page_with_its_reason(
    console: Console, question_browser: Browser, service: Service, key: str, agent: dict[str, Any]
) -> None:
    page = open_talk(console, service, key, agent, browser=question_browser)
    page.get_by_test_id("talk-start").click()
    view = page.get_by_test_id("talk-view")
    expect(view).not_to_have_attribute("data-call-id", "", timeout=15_000)
    with service.client(key) as c:
        assert c.post(f"/v1/calls/{view.get_attribute('data-call-id')}/hangup").status_code == 202
    expect(page.get_by_test_id("talk-status")).to_contain_text("Call ended: hung_up_by_operator", timeout=15_000)
    expect(page.get_by_test_id("talk-start")).to_be_enabled()


def test_the_example_page_talks_from_another_origin(
    browsers: Browsers, wavs: dict[str, Path], example_site: str, service: Service, key: str, agent: dict[str, Any]
) -> None:
    """examples/talk-web as docs/talk.md runs it: parley-talk.js loaded from the server, a token fetched with CORS."""
    context = browsers(audio=wavs["question"]).new_context()
    context.grant_permissions(["microphone"], origin=example_site)
    page = context.new_page()
    page.goto(f"{example_site}/")
    page.fill("#server", service.url)
    page.fill("#agent", agent["name"])
    page.fill("#key", key)
    page.click("#start")
    expect(page.locator("#status")).to_contain_text("Live", timeout=15_000)
    expect(page.locator("#transcript li.caller:not(.pending)").first).to_contain_text(
        "opening hours", ignore_case=True, timeout=30_000
    )
    expect(page.locator("#transcript li.agent").last).to_contain_text("nine to five", timeout=30_000)
    screenshot(page, "talk-example-page")
    page.click("#hangup")
    expect(page.locator("#status")).to_contain_text("Call ended: caller-hangup", timeout=15_000)
    context.close()


def _spend(service: Service, url: str) -> None:
    """Use a talk token once (connect, hang up), so the page's try is refused as a reuse."""
    import asyncio
    import json

    import websockets

    async def once() -> None:
        async with websockets.connect(service.url.replace("http", "ws") + url) as ws:
            await ws.send(json.dumps({"type": "end"}))
            async for _ in ws:
                pass

    run_async(asyncio.wait_for(once(), 30))


def _calls(service: Service, key: str) -> int:
    with service.client(key) as c:
        return len(c.get("/v1/calls").json())


# The worklets rendered offline in Chromium (OfflineAudioContext at 48 kHz): exact, and faster than real time.
CAPTURE_CHECK = """async (freq) => {
  const rate = 48000;
  const ctx = new OfflineAudioContext(1, rate, rate);
  await ctx.audioWorklet.addModule('/console/talk-worklet.js');
  const osc = new OscillatorNode(ctx, { frequency: freq });
  const cap = new AudioWorkletNode(ctx, 'parley-capture', { numberOfOutputs: 1, outputChannelCount: [1] });
  const frames = [];
  cap.port.onmessage = (e) => frames.push(new Int16Array(e.data));
  osc.connect(new GainNode(ctx, { gain: 0.5 })).connect(cap).connect(ctx.destination);
  osc.start();
  await ctx.startRendering();
  await new Promise((r) => setTimeout(r, 300));
  const pcm = Int16Array.from(frames.flatMap((f) => [...f]));
  const body = pcm.slice(320);  // past the filter's first 20 ms
  let crossings = 0, maxStep = 0, sq = 0;
  for (let i = 1; i < body.length; i++) {
    if ((body[i - 1] < 0) !== (body[i] < 0)) crossings++;
    maxStep = Math.max(maxStep, Math.abs(body[i] - body[i - 1]));
    sq += body[i] * body[i];
  }
  return { sizes: [...new Set(frames.map((f) => f.length))], samples: pcm.length, crossings,
           seconds: body.length / 16000, rms: Math.sqrt(sq / body.length) / 32768, maxStep: maxStep / 32768 };
}"""

PLAYBACK_CHECK = """async () => {
  const rate = 48000, wire = 16000;
  const ctx = new OfflineAudioContext(1, rate * 2, rate);
  await ctx.audioWorklet.addModule('/console/talk-worklet.js');
  const node = new AudioWorkletNode(ctx, 'parley-playback',
    { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1], processorOptions: { targetMs: 100 } });
  node.connect(ctx.destination);
  const stats = [];
  node.port.onmessage = (e) => stats.push(e.data);
  let phase = 0;
  const push = (secs) => {  // a 440 Hz sine at half scale, in 20 ms frames, continuing its phase
    for (let k = 0; k < Math.round(secs * 50); k++) {
      const f = new Int16Array(320);
      for (let i = 0; i < 320; i++) f[i] = Math.round(0.5 * 32767 * Math.sin(2 * Math.PI * 440 * phase++ / wire));
      node.port.postMessage(f.buffer, [f.buffer]);
    }
  };
  const at = (t, act) => ctx.suspend(t).then(async () => { act(); await new Promise((r) => setTimeout(r, 150));
                                                            ctx.resume(); });
  at(0.0, () => push(1.0));                                 // one second at once: plays from the start
  at(0.6, () => node.port.postMessage({ type: 'flush' }));  // barge-in: the last 0.4 s must not play
  at(1.0, () => push(0.04));                                // a tail shorter than the target: plays ~100 ms later
  const out = (await ctx.startRendering()).getChannelData(0);
  await new Promise((r) => setTimeout(r, 200));
  const peak = (a, b) => {
    let m = 0;
    for (let i = Math.round(a * rate); i < Math.round(b * rate); i++) m = Math.max(m, Math.abs(out[i]));
    return m;
  };
  let maxStep = 0, gaps = 0;
  for (let i = 1; i < out.length; i++) maxStep = Math.max(maxStep, Math.abs(out[i] - out[i - 1]));
  for (let t = 0.01; t < 0.59; t += 0.005) if (peak(t, t + 0.005) < 0.3) gaps++;
  return { maxStep, gaps, playing: peak(0.01, 0.59), afterFlush: peak(0.62, 0.99), beforeTail: peak(1.005, 1.09),
           tail: peak(1.1, 1.14), end: peak(1.2, 2.0), stats: stats[stats.length - 1] };
}"""


def test_the_worklets_resample_and_play_gap_free_without_clicks(console: Console, service: Service, key: str) -> None:
    """Microphone side: 440 Hz at 48 kHz becomes 440 Hz at 16 kHz in 640-byte frames, a 12 kHz tone is filtered out
    (it would alias to 4 kHz). Playback side: continuous while fed, silent right after a flush, a short tail
    played after the target wait, and no step between samples larger than the sine's own (no clicks)."""
    page = console(service, key)
    tone = page.evaluate(CAPTURE_CHECK, 440)
    assert tone["sizes"] == [320] and abs(tone["samples"] - 16000) <= 320, tone
    assert abs(tone["crossings"] / tone["seconds"] - 880) <= 6, tone  # 440 Hz: two zero crossings a cycle
    assert tone["rms"] == pytest.approx(0.5 / np.sqrt(2), rel=0.05), tone
    assert tone["maxStep"] <= 0.5 * 2 * np.pi * 440 / 16000 * 1.1, tone
    assert page.evaluate(CAPTURE_CHECK, 12000)["rms"] < 0.1 * 0.5 / np.sqrt(2)
    played = page.evaluate(PLAYBACK_CHECK)
    sine_step = 0.5 * 2 * np.pi * 440 / 48000
    assert played["maxStep"] <= sine_step * 1.25, played  # fades in, out, at the flush and the underrun
    assert played["gaps"] == 0 and played["playing"] > 0.45, played
    assert played["afterFlush"] < 1e-3 and played["beforeTail"] < 1e-3 and played["end"] < 1e-3, played
    assert played["tail"] > 0.4, played
    stats = played["stats"]
    assert stats["flushes"] == 1 and abs(stats["flushed"] - 0.4 * 16000) <= 800, stats
    assert stats["underruns"] >= 1, stats

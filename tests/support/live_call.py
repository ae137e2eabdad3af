"""A live call beside a fuzzer: does anything the fuzzer sends make another call's audio stall?

A cheap agent (energy VAD, canned STT/LLM, tone TTS) greets the caller with one long
greeting, so that it talks without a pause for as long as the fuzzing lasts. The caller
streams silence at real time over the talk WebSocket and stamps the arrival of every
agent audio frame; the longest gap between two frames while the agent speaks is the
stall the fuzzing caused (the playout sends one 20 ms frame per 20 ms when all is well).

The call runs in a process of its own (``python -m tests.support.live_call``), so that a fuzzer
in the test process cannot delay the measurement by holding the GIL; it runs until its
standard input closes, then prints its report as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import websockets

from .service import ROOT, Service

FRAME_S = 0.02  # caller audio: 20 ms of PCM16 at 16 kHz a message, as a phone sends it
SILENCE = bytes(640)
MS_PER_CHAR = 300.0
NOTABLE_GAP_S = 0.1  # gaps above this are listed (with their wall-clock time) in the report


def talker(seconds: float = 240.0) -> dict[str, Any]:
    """An agent document whose greeting lasts about ``seconds`` and costs no model."""
    sentence = "Thank you for calling, please hold while we talk for a long while. "
    greeting = sentence * max(1, round(seconds * 1000 / MS_PER_CHAR / len(sentence)))
    return {
        "name": "live-call-beside-the-fuzzer",
        "system_prompt": "Say the greeting.",
        "greeting": greeting.strip(),
        "vad": {"provider": "energy"},
        "stt": {"provider": "canned", "options": {"text": "hello"}},
        "llm": {"provider": "canned", "options": {"default": "Still here."}},
        "tts": {"provider": "tone", "fallback": None, "options": {"ms_per_char": MS_PER_CHAR}},
        "interruptions": {"enabled": False},
    }


@dataclass
class AudioReport:
    """What the caller heard. ``max_gap_s`` is measured only while the agent was speaking its greeting."""

    frames: int = 0
    speaking_s: float = 0.0
    max_gap_s: float = 0.0
    max_gap_at: float = 0.0  # wall clock (time.time()) when the longest gap ended
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (wall clock at its end, gap) above NOTABLE_GAP_S
    greeting_done: bool = False  # the greeting ended before the fuzzing did: the tail was not measured
    ended: str = ""  # the call ended before it was told to (end event reason, or the socket's close)
    client_lag_s: float = 0.0  # the caller's own worst scheduling delay: a gap it shares is the machine, not Parley
    client_lags: list[tuple[float, float]] = field(default_factory=list)  # (wall clock, lag) above NOTABLE_GAP_S
    server_late_frames: int = -1  # the server's own view of its playout (the call's last "media" event)
    server_max_lateness_ms: float = -1.0
    events: list[str] = field(default_factory=list)  # event types received, in order (errors with their text)


async def watch_own_lag(report: AudioReport) -> None:
    """How late this process's own timers fire: a gap that the caller shares is the machine's, not Parley's."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        lag = time.monotonic() - before - 0.01
        report.client_lag_s = max(report.client_lag_s, lag)
        if lag > NOTABLE_GAP_S:
            report.client_lags.append((time.time(), round(lag, 3)))


class _Listener:
    """What the caller hears and is told: audio gaps while the greeting plays, and the server's events."""

    def __init__(self, report: AudioReport, stop: asyncio.Event, ready: asyncio.Event) -> None:
        self.report, self.stop, self.ready = report, stop, ready
        self._last = 0.0

    def audio(self, now: float) -> None:
        report = self.report
        if self._last and not report.greeting_done and not self.stop.is_set():
            gap = now - self._last
            report.speaking_s += gap
            if gap > report.max_gap_s:
                report.max_gap_s, report.max_gap_at = gap, time.time()
            if gap > NOTABLE_GAP_S:
                report.gaps.append((time.time(), round(gap, 3)))
        self._last = now
        report.frames += 1
        self.ready.set()

    def event(self, event: dict[str, Any]) -> bool:
        """Record one event; True when it ends the call."""
        report = self.report
        kind = event.get("type", "?")
        report.events.append(f"error: {event.get('message')}" if kind == "error" else kind)
        # played out whole: a greeting cut short by the end of the call is reported too, as interrupted
        if kind == "agent_text" and event.get("turn") == 0 and not event.get("interrupted"):
            report.greeting_done = True
        if kind == "media":
            report.server_late_frames = int(event.get("late_frames", -1))
            report.server_max_lateness_ms = float(event.get("max_lateness_ms", -1))
        if kind == "end" and not self.stop.is_set():
            report.ended = str(event.get("reason"))
        return kind == "end"


async def run_call(ws_url: str, headers: dict[str, str], stop: asyncio.Event, ready: asyncio.Event) -> AudioReport:
    """Talk over ``ws_url`` until ``stop``; ``ready`` is set at the agent's first audio frame."""
    report = AudioReport()
    listener = _Listener(report, stop, ready)
    async with websockets.connect(ws_url, additional_headers=headers, max_size=2**20, ping_interval=None) as ws:

        async def send() -> None:
            start = time.monotonic()
            k = 0
            while not stop.is_set():
                await ws.send(SILENCE)
                k += 1
                await asyncio.sleep(max(0.0, start + k * FRAME_S - time.monotonic()))
            await ws.send(json.dumps({"type": "end"}))

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    listener.audio(time.monotonic())
                elif listener.event(json.loads(message)):
                    return

        sender = asyncio.create_task(send())
        watcher = asyncio.create_task(watch_own_lag(report))
        try:
            await receive()
        except websockets.ConnectionClosed:
            if not stop.is_set():
                report.ended = f"closed {ws.close_code} {ws.close_reason!r}"
        finally:
            if not stop.is_set() and not report.ended:
                report.ended = "socket closed"
            sender.cancel()
            watcher.cancel()
    return report


async def short_call(ws_url: str, headers: dict[str, str], seconds: float = 1.0) -> str:
    """A call of ``seconds`` of silence that hangs up: its id (it has a record and a recording afterwards)."""
    async with websockets.connect(ws_url, additional_headers=headers, max_size=2**20) as ws:
        first = json.loads(await ws.recv())
        for _ in range(int(seconds / FRAME_S)):
            await ws.send(SILENCE)
            await asyncio.sleep(FRAME_S)
        await ws.send(json.dumps({"type": "end"}))
        async for message in ws:
            if isinstance(message, str) and json.loads(message).get("type") == "end":
                break
    return str(first["call_id"])


async def _main(ws_url: str, headers: dict[str, str]) -> AudioReport:
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_for_stdin() -> None:
        sys.stdin.read()  # the parent closes our stdin when the fuzzing is over
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_stdin, daemon=True).start()

    async def say_ready() -> None:
        await ready.wait()
        print("ready", flush=True)

    announcer = asyncio.create_task(say_ready())
    try:
        return await run_call(ws_url, headers, stop, ready)
    finally:
        announcer.cancel()


def clock(t: float) -> str:
    """A wall-clock time as HH:MM:SS.mmm (UTC), to line a stall up with what the fuzzer sent then."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"


@dataclass
class LiveCall:
    """A running live call; ``report`` is filled in when the ``with`` block ends."""

    proc: subprocess.Popen[str]
    report: AudioReport | None = None
    error: str = ""

    def summary(self) -> str:
        r = self.report
        if r is None:
            return f"the live call gave no report: {self.error}"
        worst = sorted(r.gaps, key=lambda g: -g[1])[:10]
        stamps = ", ".join(f"{g:.3f} s at {clock(t)}" for t, g in worst)
        return (
            f"live call: {r.frames} agent frames over {r.speaking_s:.1f} s of speech, longest gap {r.max_gap_s:.3f} s; "
            f"gaps over {NOTABLE_GAP_S} s: {len(r.gaps)} (worst: {stamps or 'none'}); server playout: "
            f"{r.server_late_frames} late frames, at most {r.server_max_lateness_ms} ms late; the caller's own worst "
            f"scheduling delay {r.client_lag_s:.3f} s ({len(r.client_lags)} over {NOTABLE_GAP_S} s: the machine)"
            + (f"; the call ended early: {r.ended}" if r.ended else "")
            + (f"; errors: {[e for e in r.events if e.startswith('error')][:5]}" if "error" in str(r.events) else "")
        )


@contextmanager
def live_call(service: Service, key: str, agent_id: str, start_timeout_s: float = 60.0) -> Iterator[LiveCall]:
    """A talk call to ``agent_id`` (see :func:`talker`) running beside the ``with`` block; the agent is speaking
    when the block starts."""
    ws_url = service.url.replace("http", "ws", 1) + f"/v1/agents/{agent_id}/talk"
    env = {**os.environ, "LIVE_CALL_KEY": key}  # not on the command line: `ps` shows that
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.live_call", ws_url], cwd=ROOT, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    call = LiveCall(proc)
    try:
        _wait_ready(call, start_timeout_s)
        yield call
    finally:
        _finish(call)


def _wait_ready(call: LiveCall, timeout_s: float) -> None:
    assert call.proc.stdout is not None
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(call.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    if not found or found[0].strip() != "ready":
        call.proc.kill()
        _, err = call.proc.communicate(timeout=10)
        raise RuntimeError(f"the live call did not start speaking within {timeout_s} s: {found} {err[-2000:]}")


def _finish(call: LiveCall) -> None:
    try:
        out, err = call.proc.communicate(input="", timeout=30)
    except subprocess.TimeoutExpired:
        call.proc.kill()
        out, err = call.proc.communicate()
        call.error = "it did not hang up within 30 s"
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if lines:
        data = json.loads(lines[-1])
        data["gaps"] = [tuple(g) for g in data["gaps"]]
        data["client_lags"] = [tuple(g) for g in data["client_lags"]]
        call.report = AudioReport(**data)
    else:
        call.error = call.error or f"exit {call.proc.returncode}: {err[-2000:]}"


if __name__ == "__main__":
    url = sys.argv[1]
    report = asyncio.run(_main(url, {"Authorization": f"Bearer {os.environ['LIVE_CALL_KEY']}"}))
    print(json.dumps(asdict(report)), flush=True)

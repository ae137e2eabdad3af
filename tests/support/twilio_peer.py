"""Twilio's side of a bidirectional Media Stream, for tests: what Twilio sends, and how it plays what it gets.

Follows Twilio's documented wire format (https://www.twilio.com/docs/voice/media-streams/websocket-messages):
it sends ``connected``, ``start``, ``media`` (base64 µ-law 8 kHz, 20 ms), ``dtmf``,
``stop``; it plays received ``media`` in order at real time, echoes each ``mark``
when the audio before it has played, and on ``clear`` drops what it has buffered
and echoes the marks that were pending (as Twilio does). Anything else Parley sends
is recorded as a protocol violation (Twilio would fail the call with error 31924).
Also a local server speaking Twilio's REST API (Calls.json create/update), since
api.twilio.com cannot be reached here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from aiohttp import web

from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16

FRAME = 160  # 20 ms of 8 kHz µ-law


@dataclass
class Heard:
    t: float
    kind: str
    data: Any = None


@dataclass
class TwilioPeer:
    url: str
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    call_sid: str = "CA00000000000000000000000000000001"
    stream_sid: str = "MZ00000000000000000000000000000001"
    events: list[Heard] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    played: list[bytes] = field(default_factory=list)  # what the caller heard: agent audio as played (µ-law)
    underruns: int = 0  # ticks with nothing to play in the middle of agent speech

    def __post_init__(self) -> None:
        self._to_send: deque[bytes] = deque()
        self._dtmf: deque[str] = deque()
        self._buffer: deque[bytes | str] = deque()  # µ-law frames and mark names, in arrival order
        self._seq = 0
        self._t0 = 0.0
        self._closed = asyncio.Event()
        self.agent_frames = 0

    def now(self) -> float:
        return time.monotonic() - self._t0

    def say(self, pcm8k: np.ndarray) -> None:
        """Queue caller speech (int16, 8 kHz); silence is sent whenever nothing is queued."""
        data = pcm16_to_ulaw(pcm8k.astype(np.int16).tobytes())
        for i in range(0, len(data) - FRAME + 1, FRAME):
            self._to_send.append(data[i : i + FRAME])

    def speaking(self) -> bool:
        return bool(self._to_send)

    def kinds(self, kind: str) -> list[Heard]:
        return [e for e in self.events if e.kind == kind]

    async def wait_for(self, kind: str, count: int = 1, within: float = 60.0) -> Heard:
        deadline = time.monotonic() + within
        while len(self.kinds(kind)) < count:
            if time.monotonic() > deadline or self._closed.is_set():
                seen = [e.kind for e in self.events][-20:]
                raise TimeoutError(f"no {kind} #{count} after {within}s; events: {seen}")
            await asyncio.sleep(0.02)
        return self.kinds(kind)[count - 1]

    async def wait_played(self, frames: int, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while self.agent_frames < frames:
            if time.monotonic() > deadline or self._closed.is_set():
                raise TimeoutError(f"only {self.agent_frames} agent frames played")
            await asyncio.sleep(0.02)

    async def wait_quiet(self, secs: float = 1.5, within: float = 60.0) -> None:
        """Until the agent has sent no audio for ``secs`` and our playback buffer is empty."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            media = self.kinds("media")
            if (not media or self.now() - media[-1].t > secs) and not self._buffer:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the agent did not go quiet")

    def _next(self, event: str, **body: Any) -> str:
        self._seq += 1
        return json.dumps({"event": event, "sequenceNumber": str(self._seq), "streamSid": self.stream_sid, **body})

    async def run(self, script: Any) -> None:
        """Connect, start, and run ``script(peer)`` while sending/playing audio; send stop when it returns."""
        async with websockets.connect(self.url, additional_headers=self.headers) as ws:
            self._t0 = time.monotonic()
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {"accountSid": "AC00000000000000000000000000000000", "streamSid": self.stream_sid,
                     "callSid": self.call_sid, "tracks": ["inbound"], "customParameters": self.params,
                     "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
            await ws.send(self._next("start", start=start))
            tasks = [asyncio.create_task(self._send_loop(ws)), asyncio.create_task(self._receive_loop(ws)),
                     asyncio.create_task(self._play_loop(ws))]  # fmt: skip
            try:
                await script(self)
                await ws.send(self._next("stop", stop={"accountSid": "AC0", "callSid": self.call_sid}))
                await asyncio.sleep(0.3)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def press(self, digits: str) -> None:
        """Keypad digits, sent as ``dtmf`` events between media messages."""
        self._dtmf.extend(digits)

    async def _send_loop(self, ws: Any) -> None:
        chunk = 0
        silence = bytes([0xFF]) * FRAME
        while True:
            await asyncio.sleep(max(0.0, (chunk + 1) * 0.02 - self.now()))
            payload = self._to_send.popleft() if self._to_send else silence
            chunk += 1
            media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20),
                     "payload": base64.b64encode(payload).decode()}  # fmt: skip
            await ws.send(self._next("media", media=media))
            if self._dtmf and chunk % 5 == 0:
                await ws.send(self._next("dtmf", dtmf={"track": "inbound_track", "digit": self._dtmf.popleft()}))

    async def _receive_loop(self, ws: Any) -> None:
        try:
            async for message in ws:
                if not isinstance(message, str):
                    self.violations.append("binary message")
                    continue
                data = json.loads(message)
                event = data.get("event")
                if data.get("streamSid") != self.stream_sid:
                    self.violations.append(f"{event} without our streamSid")
                if event == "media":
                    payload = base64.b64decode(data["media"]["payload"])
                    if len(payload) % FRAME:
                        self.violations.append(f"media of {len(payload)} bytes")
                    self._buffer.append(payload)
                    self.events.append(Heard(self.now(), "media", len(payload)))
                elif event == "mark":
                    self._buffer.append(str(data["mark"]["name"]))
                    self.events.append(Heard(self.now(), "mark_sent", data["mark"]["name"]))
                elif event == "clear":
                    pending = [m for m in self._buffer if isinstance(m, str)]
                    self._buffer.clear()
                    self.events.append(Heard(self.now(), "clear", len(pending)))
                    for name in pending:  # Twilio echoes the marks it dropped
                        await ws.send(self._next("mark", mark={"name": name}))
                else:
                    self.violations.append(f"event {event!r}")
        finally:
            self._closed.set()

    async def _play_loop(self, ws: Any) -> None:
        tick = 0
        playing = False
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, tick * 0.02 - self.now()))
            while self._buffer and isinstance(self._buffer[0], str):
                name = self._buffer.popleft()
                assert isinstance(name, str)
                await ws.send(self._next("mark", mark={"name": name}))
                self.events.append(Heard(self.now(), "mark_played", name))
            if self._buffer:
                frame = self._buffer.popleft()
                assert isinstance(frame, bytes)
                self.played.append(frame)
                self.agent_frames += 1
                playing = True
            else:
                if playing and self.kinds("media") and self.now() - self.kinds("media")[-1].t < 0.1:
                    self.underruns += 1
                playing = False

    def heard_pcm(self) -> np.ndarray:
        return np.frombuffer(ulaw_to_pcm16(b"".join(self.played)), dtype=np.int16)


class FakeTwilioRest:
    """A local server speaking Twilio's REST API for Calls (create and update), in a thread of its own.

    Wire format from https://www.twilio.com/docs/voice/api/call-resource (form-encoded POSTs with HTTP
    basic auth, JSON answers); requests are kept for the test to inspect.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeTwilioRest:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def handle(request: web.Request) -> web.Response:
            form = dict(await request.post())
            self.requests.append({"path": request.path, "auth": request.headers.get("Authorization"),
                                  "form": {k: str(v) for k, v in form.items()}})  # fmt: skip
            sid = request.match_info.get("call_sid") or f"CA{len(self.requests):032d}"
            body = {"sid": sid, "account_sid": request.match_info["account"], "status": "queued",
                    "to": form.get("To"), "from": form.get("From"), "direction": "outbound-api"}  # fmt: skip
            return web.json_response(body, status=201 if "call_sid" not in request.match_info else 200)

        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", handle)
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call_sid}.json", handle)

        async def start() -> None:
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

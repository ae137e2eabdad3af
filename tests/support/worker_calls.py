"""Talk calls for the many-workers tests (cap, drain, registry): real WebSocket callers streaming silence at real
time to a model-free agent that speaks a long greeting, each noting what it heard and how its call ended."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from .live_call import FRAME_S, SILENCE, talker
from .service import Service

#: a model-free agent (energy VAD, canned STT/LLM, tone TTS) that talks for minutes
AGENT: dict[str, Any] = {**talker(300), "name": "worker-tests-talker"}


@dataclass
class Caller:
    """One caller's side of a call."""

    call_id: str | None = None
    refused: tuple[int, str] | None = None  # the close code and reason of a refused call
    refused_after_s: float | None = None
    end_reason: str | None = None
    closed: tuple[int | None, str] | None = None
    frames: int = 0
    max_gap_s: float = 0.0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set it: the caller hangs up

    async def run(self, ws_url: str, headers: dict[str, str]) -> Caller:
        t0 = time.monotonic()
        async with websockets.connect(ws_url, additional_headers=headers, max_size=2**20, ping_interval=None) as ws:
            try:
                first = json.loads(await ws.recv())
            except websockets.ConnectionClosed as exc:
                self.refused = (exc.rcvd.code if exc.rcvd else 1006, exc.rcvd.reason if exc.rcvd else "")
                self.refused_after_s = time.monotonic() - t0
                self.started.set()
                return self
            self.call_id = first.get("call_id")
            self.started.set()
            sender = asyncio.create_task(self._send(ws))
            try:
                await self._receive(ws)
            except websockets.ConnectionClosed as exc:
                self.closed = (exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "")
            finally:
                sender.cancel()
        return self

    async def _send(self, ws: Any) -> None:
        start, k = time.monotonic(), 0
        while not self.stop.is_set():
            await ws.send(SILENCE)
            k += 1
            await asyncio.sleep(max(0.0, start + k * FRAME_S - time.monotonic()))
        await ws.send(json.dumps({"type": "end"}))

    async def _receive(self, ws: Any) -> None:
        last: float | None = None
        async for message in ws:
            now = time.monotonic()
            if isinstance(message, bytes):
                if last is not None and not self.stop.is_set():
                    self.max_gap_s = max(self.max_gap_s, now - last)
                last = now
                self.frames += 1
            else:
                event = json.loads(message)
                if event.get("type") == "end":
                    self.end_reason = event.get("reason")
                    return


def talk_url(service: Service, agent_id: str) -> str:
    return f"{service.url.replace('http', 'ws', 1)}/v1/agents/{agent_id}/talk"


Calls = tuple[list[Caller], list[asyncio.Task[Caller]]]


async def start_calls(service: Service, key: str, agent_id: str, n: int) -> Calls:
    """``n`` callers dialling at once; returns when each is either talking or refused."""
    callers = [Caller() for _ in range(n)]
    headers = {"Authorization": f"Bearer {key}"}
    tasks = [asyncio.create_task(c.run(talk_url(service, agent_id), headers)) for c in callers]
    await asyncio.wait_for(asyncio.gather(*(c.started.wait() for c in callers)), 60)
    return callers, tasks


async def hang_up(callers: list[Caller], tasks: list[asyncio.Task[Caller]]) -> None:
    for c in callers:
        c.stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)


def make_agent(service: Service, key: str, doc: dict[str, Any] | None = None) -> str:
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        created = c.post("/v1/agents", json=doc or {**AGENT, "name": f"worker-tests-talker-{uuid.uuid4().hex[:8]}"})
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{service.url}/readyz", timeout=5)
    return r.status_code, r.json()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    """Poll ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def sip_options(port: int) -> tuple[int, str]:
    """An OPTIONS probe (as Kamailio's dispatcher sends) to the SIP endpoint: its status and Retry-After."""
    import secrets
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        me = sock.getsockname()[1]
        tag = secrets.token_hex(4)
        message = (
            f"OPTIONS sip:parley@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{tag}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={tag}\r\n"
            "To: <sip:parley@127.0.0.1>\r\n"
            f"Call-ID: {tag}@probe\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(message.encode(), ("127.0.0.1", port))
        reply = sock.recv(65535).decode(errors="replace")
    status = int(reply.split(" ", 2)[1])
    lines = reply.split("\r\n")
    retry = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("retry-after:")), "")
    return status, retry

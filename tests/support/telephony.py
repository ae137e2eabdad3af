"""The carriers' side of a phone call, shared by the provider tests (Vonage, Plivo, Exotel, Asterisk, FreeSWITCH).

A fake carrier REST API (``FakeApi``), the caller's speech as 20 ms frames, ``talk`` (be the carrier on the
media WebSocket), the finished call's record and what it must hold, and the wire-format fuzzing kit.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import websockets
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from parley.telephony.stream import StreamProtocol, WireError

from .audio import espeak
from .calls import read_call
from .served import AGENT as AGENT  # the agent every provider test calls
from .service import Service

QUESTION = "What are your opening hours?"

Reply = Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]


class FakeApi:
    """A carrier's REST API on 127.0.0.1: records each request, answers with ``reply(method, path, headers, body)``."""

    def __init__(self, reply: Reply) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                api.requests.append((self.command, self.path, headers, body))
                status, data = reply(self.command, self.path, headers, body)
                out = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def speech(rate: int) -> np.ndarray:
    """The caller: a moment of silence (the greeting plays), the question, then quiet while the agent answers."""
    question = espeak(QUESTION, rate=rate)
    return np.concatenate([np.zeros(int(rate * 1.5), np.int16), question, np.zeros(rate * 5, np.int16)])


def frames(pcm: np.ndarray, rate: int) -> list[bytes]:
    """20 ms PCM16 little-endian frames."""
    n = rate // 50
    return [pcm[i : i + n].astype("<i2").tobytes() for i in range(0, len(pcm) - n + 1, n)]


Message = str | bytes


async def talk(
    url: str,
    opening: list[Message],
    media: list[Message],
    answer: Callable[[Message], list[Message]] | None = None,
    closing: list[Message] | None = None,
    **connect: Any,
) -> list[Message]:
    """Be the carrier: send ``opening``, then ``media`` one message per 20 ms in real time, answering what
    Parley sends with ``answer``; then ``closing`` and hang up. Returns everything Parley sent."""
    got: list[Message] = []
    async with websockets.connect(url, max_size=2**20, **connect) as ws:

        async def receive() -> None:
            async for message in ws:
                got.append(message)
                for back in answer(message) if answer else []:
                    await ws.send(back)

        receiver = asyncio.create_task(receive())
        for m in opening:
            await ws.send(m)
        start = time.monotonic()
        for k, m in enumerate(media):
            await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
            await ws.send(m)
        for m in closing or []:
            await ws.send(m)
        await asyncio.sleep(0.2)
        receiver.cancel()
    return got


def finished_call(service: Service, key: str, transport: str) -> dict[str, Any]:
    """The one call over ``transport``, once its record is closed."""
    with service.client(key) as c:
        for _ in range(100):
            calls = c.get("/v1/calls", params={"transport": transport}).json()
            if calls and calls[0]["status"] != "active":
                return dict(c.get(f"/v1/calls/{calls[0]['id']}").json())
            time.sleep(0.2)
    raise AssertionError(f"no finished {transport} call: {calls}")


def assert_conversation(call: dict[str, Any], transport: str) -> None:
    assert call["transport"] == transport and call["status"] == "ended"
    record = read_call(call)
    record.expect.contains_turn(caller=("hours", "open"))
    record.expect.contains_turn(agent="nine to five")
    assert call["recording_bytes"] and call["recording_bytes"] > 44


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


def wire_messages(events: list[str], keys: list[str], event_key: str = "event") -> st.SearchStrategy[Message]:
    """Garbage, and messages shaped like the provider's (known event names, known keys, random values)."""
    shaped = st.builds(
        lambda e, d: json.dumps({event_key: e, **d}),
        st.sampled_from(events) | st.text(max_size=10),
        st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), json_values, max_size=5),
    )
    return st.text(max_size=120) | st.binary(max_size=700) | shaped


def fuzz(protocol: Callable[[], StreamProtocol], messages: list[Message]) -> None:
    """Whatever arrives, parse() answers with events or WireError, and the protocol can still write."""
    p = protocol()
    for m in messages:
        try:
            events = p.parse(m)
        except WireError:
            continue
        assert isinstance(events, list)
    p.audio(b"\x00\x00" * (p.sample_rate // 50))
    p.mark("p1:5")
    p.clear()
    p.hangup()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

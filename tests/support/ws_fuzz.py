"""A WebSocket fuzzer for the talk socket and the carriers' media streams (used by tests/test_security_fuzz.py).

Each target gets garbage of every kind (random bytes, text that is not JSON or not
UTF-8, JSON nested a hundred thousand deep, megabytes in one frame, lone surrogates,
numbers of thousands of digits, and seeded random JSON shaped like the protocol's own
messages) before its stream starts and, where the harness can start one, in the
middle of a call. After each frame the socket must answer a probe (the talk socket:
an ``error`` event; a carrier stream, which has no error message: a ping) or close
cleanly, within the time limit. Handshakes with hostile credentials must be refused,
never crash. Every breach is a :class:`Finding` naming the frame that caused it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import websockets
from websockets.asyncio.client import ClientConnection

from .live_call import clock

CLEAN_CLOSES = {1000, 1003, 1007, 1008, 1009}  # normal, unacceptable data, not UTF-8, policy, too big
PROBE = json.dumps({"type": "dtmf", "digit": "?"})  # the talk socket answers it with an error event
SEED = 8


@dataclass
class Finding:
    target: str
    case: str
    problem: str
    at: float

    def __str__(self) -> str:
        return f"[{clock(self.at)}] {self.target}: {self.case}: {self.problem}"


@dataclass
class Target:
    """A socket to fuzz: ``url`` and ``headers`` to connect, and how to start a call on it (None: cannot)."""

    name: str
    url: str
    headers: dict[str, str]
    start: Callable[[], tuple[str, list[str | bytes]]] | None = None  # → (url, first messages) of a started call


Frame = str | bytes | tuple[str, bytes]  # ("text", raw): bytes sent as a text frame (not necessarily UTF-8)


# --- what is sent -------------------------------------------------------------------------------------


KEYS = ["type", "event", "start", "media", "payload", "digit", "dtmf", "mark", "name", "streamSid", "stream_sid",
        "streamId", "sequenceNumber", "sequence_number", "customParameters", "custom_parameters", "mediaFormat",
        "media_format", "content-type", "track", "stop", "token", "agent", "tenant", "call", "reason"]  # fmt: skip
EVENTS = {
    "talk": ["dtmf", "audio", "hello"],  # not "end": that one hangs up, as it should
    "twilio": ["connected", "start", "media", "mark", "dtmf", "stop"],
    "vonage": ["websocket:connected", "websocket:dtmf", "websocket:notify", "websocket:cleared"],
    "plivo": ["start", "media", "dtmf", "playedStream", "clearedAudio", "stop"],
    "exotel": ["connected", "start", "media", "dtmf", "mark", "clear", "stop"],
    "asterisk": ["MEDIA_START", "MEDIA_XOFF", "MEDIA_XON", "HANGUP", "DTMF_END", "MEDIA_BUFFERING_COMPLETED"],
    "freeswitch": ["start", "metadata"],
}
STRINGS = ["", " ", "é", "\ud800", "\x00", "\u202e", "9" * 5000, "x" * 70_000, "%s%n", "../../etc/passwd",
           "audio/l16;rate=16000", "audio/x-mulaw", "AAAA", "!!!", "+15550001111", "p1:5", "🎧" * 100]  # fmt: skip


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any shape, biased towards the keys and values the protocols use."""
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False, 0, -1, 2**64, 1e308, -0.0, 10**400])
    if kind in (1, 2, 3):
        return rng.choice(STRINGS) if rng.random() < 0.6 else "".join(chr(rng.randrange(1, 0x3000)) for _ in range(8))
    if kind == 4:
        return rng.randrange(-(10**6), 10**6)
    if kind in (5, 6):
        return {rng.choice(KEYS) if rng.random() < 0.8 else rng.choice(STRINGS): random_json(rng, depth + 1)
                for _ in range(rng.randrange(6))}  # fmt: skip
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def protocol_shaped(rng: random.Random, target: str) -> str:
    """A message with one of the protocol's own event names and random members."""
    if target == "asterisk":
        event = rng.choice(EVENTS[target])
        values = [rng.choice(STRINGS)[:300].encode("utf-8", "replace").decode() for _ in range(rng.randrange(4))]
        fields = " ".join(f"{rng.choice(KEYS)}:{v}" for v in values)  # a text frame is UTF-8: no lone surrogates
        return f"{event} {fields}".strip()
    msg = random_json(rng, 1)
    msg = msg if isinstance(msg, dict) else {}
    msg["type" if target == "talk" else "event"] = rng.choice(EVENTS[target])
    return json.dumps(msg)


def frames(target: str, rng: random.Random, n_random: int = 25) -> Iterator[tuple[str, Frame, bool]]:
    """(what, frame, the talk socket must answer it with an error event)."""
    yield "1 byte of binary", b"\x00", False
    yield "641 random bytes (odd length)", rng.randbytes(641), False
    yield "64,000 random bytes", rng.randbytes(64_000), False
    yield "64,001 random bytes", rng.randbytes(64_001), True
    yield "1 MiB of binary", rng.randbytes(2**20), True
    yield "empty text", "", True
    yield "text that is not JSON", "hello, is anyone there?", True
    yield "text that is not UTF-8", ("text", b"\xff\xfe\xed\xa0\x80"), True
    for literal in ("null", "1e999", "[]", '"end"', "-", "NaN", '{"type": null}', '{"event": {}}'):
        yield f"JSON {literal}", literal, True
    yield "JSON arrays nested 100,000 deep", "[" * 100_000 + "]" * 100_000, True
    yield "JSON objects nested 50,000 deep", '{"type":' * 50_000 + '"end"' + "}" * 50_000, True
    yield "a lone surrogate", '{"type": "\\ud800", "event": "\\udfff", "digit": "\\ud800"}', True
    yield "a 1 MB JSON string", json.dumps({"type": "x" * 1_000_000, "event": "x" * 1_000_000}), True
    digits = "9" * 5000
    yield "a 5,000-digit number", f'{{"type": "dtmf", "sequenceNumber": {digits}, "digit": {digits}}}', True
    yield "a 2 MB frame of JSON whitespace", " " * 2_000_000 + "{}", True
    for i in range(n_random):
        yield f"random JSON #{i}", json.dumps(random_json(rng)), True
        shaped = protocol_shaped(rng, target)
        yield f"protocol-shaped #{i}: {shaped[:100]}", shaped, True


def handshakes(target: Target) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Hostile handshakes: (what, url, headers). Each must be refused (or accepted) cleanly."""
    bare = target.url.split("?", 1)[0]
    yield "no credentials", bare, {}
    for what, value in (("non-ASCII", "é"), ("a lone surrogate", "\ud800"), ("1,000 characters", "a" * 1000)):
        query = urlencode({"token": value, "agent": value, "rate": value}, errors="surrogatepass")
        yield f"{what} in the query", f"{bare}?{query}", {}
        header = value.encode("utf-8", "surrogatepass").decode("latin-1")
        for name in ("Authorization", "X-Twilio-Signature", "X-API-Key"):
            yield f"{what} in {name}", target.url, {name: f"Basic {header}" if name == "Authorization" else header}
    yield "Basic credentials that are not base64", target.url, {"Authorization": "Basic !!!"}
    yield "Basic credentials that are not UTF-8", target.url, {"Authorization": "Basic //79"}


# (a token past 8 KiB makes the handshake line too long: test_an_oversized_websocket_handshake_is_answered)
FORGED_TOKENS = {"non-ASCII": "é", "a lone surrogate": "\ud800", "empty": "", "5,000 characters": "a" * 5_000,
                 "not a string": ["x"]}  # fmt: skip


def forged(url: str, first: list[str | bytes], token: Any) -> tuple[str, list[str | bytes]]:
    """A well-formed start whose ``token`` (in the URL's query or in the start message) is ``token``."""

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: token if k == "token" else swap(v) for k, v in value.items()}
        return value

    parts = urlsplit(url)
    query = [(k, token if k == "token" and isinstance(token, str) else v) for k, v in parse_qsl(parts.query)]
    url = parts._replace(query=urlencode(query, errors="surrogatepass")).geturl()
    messages: list[str | bytes] = []
    for m in first:
        try:
            messages.append(json.dumps(swap(json.loads(m))) if isinstance(m, str) else m)
        except ValueError:
            messages.append(m)
    return url, messages


# --- how it is sent ------------------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.findings: list[Finding] = []
        #: what was tried: (target, case, outcome, seconds it took, wall clock when it was sent)
        self.outcomes: list[tuple[str, str, str, float, float]] = []

    def add(self, target: str, case: str, problem: str) -> None:
        self.findings.append(Finding(target, case, problem, time.time()))

    async def connect(self, t: Target, url: str, case: str) -> ClientConnection | None:
        try:
            async with asyncio.timeout(self.limit_s * 5):  # a handshake loads the agent's models
                ws = await websockets.connect(url, additional_headers=t.headers, max_size=2**24, ping_interval=None,
                                              open_timeout=None, compression=None)  # fmt: skip
                if t.name == "talk":
                    first = json.loads(await ws.recv())
                    assert first["type"] == "call", first
        except Exception as exc:
            self.add(t.name, case, f"cannot connect ({type(exc).__name__}: {str(exc)[:200]})")
            return None
        return ws

    async def answer(self, t: Target, ws: ClientConnection, frame: Frame, errors: int) -> str:
        """Send ``frame`` and a probe; '' when the socket answered the probe in time, else what went wrong."""
        limit = self.limit_s
        if t.name == "talk" and isinstance(frame, bytes) and len(frame) <= 64_000:
            limit += len(frame) / 32_000  # caller audio is taken in at real time: 64,000 bytes take 2 s
        try:
            async with asyncio.timeout(limit):
                if isinstance(frame, tuple):
                    await ws.send(frame[1], text=True)
                else:
                    await ws.send(frame)
                if t.name != "talk":
                    await (await ws.ping())
                    return ""
                await ws.send(PROBE)
                seen = 0
                while seen < errors:
                    message = await ws.recv()
                    if isinstance(message, str):
                        event = json.loads(message)
                        if event.get("type") == "end":
                            return f"the call ended: {event.get('reason')!r} (it should go on after a bad message)"
                        seen += event.get("type") == "error"
                return ""
        except TimeoutError:
            return f"no answer within {limit:.1f} s"
        except websockets.ConnectionClosed:
            code = ws.close_code if ws.close_code is not None else 1006
            if code in CLEAN_CLOSES:
                return "closed"
            return f"closed with {code} {ws.close_reason or ''!r}"[:300]

    async def run_frames(self, t: Target, started: bool) -> None:
        """Every frame on ``t`` (after a call started on it when ``started``), reconnecting after each close."""
        rng = random.Random(f"{SEED}-{t.name}-{started}")
        ws: ClientConnection | None = None
        phase = "in a call" if started else "before the stream starts"
        before = "the start"
        for what, frame, must_answer in frames(t.name, rng):
            case = f"{what} ({phase})"
            if t.name != "talk":  # a ping's answer does not wait for the frame before it: a close may be late
                case += f" [or the frame before it: {before}]"
            before = what
            if ws is None:
                url, first = t.start() if (started and t.start) else (t.url, [])
                ws = await self.connect(t, url, case)
                if ws is None:
                    return
                if first and not await self.started(t, ws, first, case):
                    return
            sent, wall = time.monotonic(), time.time()
            problem = await self.answer(t, ws, frame, 1 + must_answer)
            took = time.monotonic() - sent
            self.outcomes.append((t.name, case, problem or "answered", took, wall))
            if problem == "closed":
                await ws.close()
                ws = None
            elif problem:
                self.add(t.name, case, problem)
                await ws.close()
                ws = None
            elif took > self.limit_s and not (t.name == "talk" and isinstance(frame, bytes)):
                self.add(t.name, case, f"answered after {took:.2f} s")
        if ws is not None:
            await ws.close()

    async def started(self, t: Target, ws: ClientConnection, first: list[str | bytes], case: str) -> bool:
        """Send the messages that start a call; False (a finding: the harness tests nothing then) if it closed."""
        for message in first:
            await ws.send(message)
        await asyncio.sleep(0.5)  # the agent is looked up and its models load
        try:
            async with asyncio.timeout(self.limit_s):
                await (await ws.ping())
            return True
        except (TimeoutError, websockets.ConnectionClosed):
            self.add(t.name, case, f"a well-formed start did not start a call: {ws.close_code} {ws.close_reason!r}")
            return False

    async def run_forged_starts(self, t: Target) -> None:
        """Starts that are well formed but carry a forged token: a clean close (1008) or a call, never a crash."""
        assert t.start is not None
        for what, token in FORGED_TOKENS.items():
            case = f"a start whose token is {what}"
            url, first = forged(*t.start(), token)
            sent, wall = time.monotonic(), time.time()
            try:
                async with asyncio.timeout(self.limit_s * 2):
                    ws = await websockets.connect(url, additional_headers=t.headers, ping_interval=None)
            except websockets.InvalidStatus as exc:
                if exc.response.status_code >= 500:
                    self.add(t.name, case, f"refused with HTTP {exc.response.status_code}")
                continue
            except Exception as exc:
                self.add(t.name, case, f"cannot connect ({type(exc).__name__}: {str(exc)[:200]})")
                continue
            try:
                for message in first:
                    await ws.send(message)
                async with asyncio.timeout(self.limit_s):
                    await ws.wait_closed()
            except TimeoutError:
                pass  # still open: a call (the token is not what this protocol checks), or waiting for more
            except websockets.ConnectionClosed:
                pass
            if ws.close_code is not None and ws.close_code not in CLEAN_CLOSES:
                self.add(t.name, case, f"closed with {ws.close_code} {ws.close_reason!r}")
            self.outcomes.append((t.name, case, f"close {ws.close_code}", time.monotonic() - sent, wall))
            await ws.close()

    async def run_burst(self, t: Target, connections: int = 20, each: int = 250) -> None:
        """Many sockets at once, each sending nothing but garbage: every one closed cleanly (a stream gives up on a
        peer after MAX_BAD_MESSAGES), in time, and the live call beside it not disturbed."""
        case = f"{connections} sockets at once, {each} garbage frames each"
        sent, wall = time.monotonic(), time.time()

        async def one(k: int) -> str:
            try:
                async with asyncio.timeout(self.limit_s * 10):
                    ws = await websockets.connect(t.url, additional_headers=t.headers, ping_interval=None)
                    drain = asyncio.create_task(_drain(ws))  # the talk socket answers each: read what it says
                    try:
                        for i in range(each):
                            await ws.send(f'{{"event": "garbage", "type": "garbage", "n": {i}}}')
                        await (await ws.ping())
                    except websockets.ConnectionClosed:
                        pass
                    await ws.close()
                    drain.cancel()
                    code = ws.close_code
                    return "" if code is None or code in CLEAN_CLOSES else f"closed with {code} {ws.close_reason!r}"
            except TimeoutError:
                return f"not done within {self.limit_s * 10} s"
            except Exception as exc:
                return f"{type(exc).__name__}: {str(exc)[:200]}"

        problems = [p for p in await asyncio.gather(*(one(k) for k in range(connections))) if p]
        for problem in sorted(set(problems)):
            self.add(t.name, case, f"{problems.count(problem)} of {connections}: {problem}")
        self.outcomes.append((t.name, case, "burst", time.monotonic() - sent, wall))

    async def run_handshakes(self, t: Target) -> None:
        for what, url, headers in handshakes(t):
            case = f"handshake with {what}"
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self.limit_s * 2):
                    ws = await websockets.connect(url, additional_headers=headers, ping_interval=None)
                    try:
                        async with asyncio.timeout(self.limit_s):
                            await (await ws.ping())  # accepted: it must still be a working socket
                    except websockets.ConnectionClosed:
                        if ws.close_code not in CLEAN_CLOSES:
                            self.add(t.name, case, f"accepted, then closed with {ws.close_code}")
                    await ws.close()
            except websockets.InvalidStatus as exc:
                if exc.response.status_code >= 500:
                    self.add(t.name, case, f"refused with HTTP {exc.response.status_code}")
            except TimeoutError:
                self.add(t.name, case, f"no answer to the handshake in {self.limit_s * 2} s (the connection is held)")
                continue
            except Exception as exc:
                self.add(t.name, case, f"{type(exc).__name__}: {str(exc)[:200]}")
            if time.monotonic() - sent > self.limit_s:
                self.add(t.name, case, f"answered after {time.monotonic() - sent:.2f} s")


async def _drain(ws: ClientConnection) -> None:
    try:
        async for _ in ws:
            pass
    except websockets.ConnectionClosed:
        pass


async def fuzz_websockets(targets: list[Target], limit_s: float) -> Fuzzer:
    """Fuzz each target in turn: handshakes, frames before a start, frames in a call."""
    fuzzer = Fuzzer(limit_s)
    for t in targets:
        await fuzzer.run_handshakes(t)
        await fuzzer.run_frames(t, started=False)
        await fuzzer.run_burst(t)
        if t.start is not None:
            await fuzzer.run_forged_starts(t)
            await fuzzer.run_frames(t, started=True)
    return fuzzer

"""Requests that fail: one cheap log line and a plain 500 with every security header; and text that no handler
could store or answer refused up front: lone surrogates, NULs, NaN/Infinity or undecodable text in a JSON body
(422), a NUL in the URL (400).

Plain ASGI middleware (see parley.api.security for why). Starlette's own last-resort handler sits outside every
middleware, so its 500s carried none of the security headers, and it re-raises so that the server logs the error
a second time, on the event loop; :class:`UnhandledErrorMiddleware` answers inside them and does not re-raise.
"""

from __future__ import annotations

import json
import math
import re

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

INTERNAL_ERROR = json.dumps({"detail": "internal error"}).encode()
# \uD800-\uDFFF as a JSON escape (the backslash's own escaping is checked separately, see lone_surrogate_at)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD]([89abAB]|[c-fC-F])[0-9a-fA-F]{2}")
_NUL_ESCAPE = re.compile(r"\\u0000")
# NaN, Infinity, an exponent of 3+ digits or 309+ digits in a row: a number json reads as nan/inf may be there
_MAYBE_NON_FINITE = re.compile(r"NaN|Infinity|[eE]\+?0*[1-9][0-9]{2}|(?<![0-9])[0-9]{309}")
_JSON_TYPE = re.compile(r"^\s*application/(?:[\w.+-]*\+)?json\s*(?:;|$)", re.IGNORECASE)


async def _reply(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UnhandledErrorMiddleware:
    """An exception out of a request becomes a 500 ``{"detail": "internal error"}`` (when nothing was sent yet) and
    one log record, whose traceback the log's writer thread formats (parley.logs)."""

    def __init__(self, app: ASGIApp, passthrough: tuple[type[BaseException], ...] = ()) -> None:
        self.app = app
        self.passthrough = passthrough  # raised on purpose for an outer middleware to answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except self.passthrough:
            raise
        except Exception as exc:
            log.error("unhandled_error", method=scope.get("method"), path=scope.get("path"), exc_info=exc)
            if not started:
                await _reply(send, 500, INTERNAL_ERROR)
            # started: the server sees an unfinished response and closes the connection, as a client must learn


def lone_surrogate_at(text: str) -> int | None:
    """Where ``text`` (JSON) has a ``\\uD800``-``\\uDFFF`` escape that is not half of a pair; None if nowhere.

    Python's json module turns such an escape into a lone surrogate, which passes validation and then fails
    wherever the text is encoded (the database, the response): a 500. Linear: each candidate looks back over the
    backslashes just before it, and those runs do not overlap."""
    pending = -1  # where the low half must start to complete the pair just seen
    for m in _SURROGATE_ESCAPE.finditer(text):
        start = m.start()
        if not _is_escape(text, start):
            continue  # the backslash is itself escaped: plain text "ud800"
        high = m.group(1) in "89abAB"
        if pending >= 0:
            if not high and start == pending:
                pending = -1
                continue
            return pending - 6
        if not high:
            return start
        pending = m.end()
    return pending - 6 if pending >= 0 else None


def _is_escape(text: str, start: int) -> bool:
    """Whether the backslash at ``start`` begins an escape: an even number of backslashes precede it."""
    back = start
    while back > 0 and text[back - 1] == "\\":
        back -= 1
    return (start - back) % 2 == 0


def nul_escape_at(text: str) -> int | None:
    """Where ``text`` (JSON) has a ``\\u0000`` escape: a NUL, which PostgreSQL refuses in text and JSON (a 500)."""
    return next((m.start() for m in _NUL_ESCAPE.finditer(text) if _is_escape(text, m.start())), None)


class BadJsonText(json.JSONDecodeError):
    """A JSON body that is not Unicode text: a JSONDecodeError, so that code reading the body treats it as bad JSON."""

    def __init__(self, message: str, text: str, position: int) -> None:
        super().__init__(message, text, position)


def check_json_text(body: bytes) -> None:
    """Raises :class:`BadJsonText` for a JSON body that is not valid Unicode text, or holds numbers that are not."""
    try:
        text = body.decode(json.detect_encoding(body))
    except UnicodeDecodeError as exc:
        raise BadJsonText(f"the body is not valid {exc.encoding} text", "", exc.start) from None
    position = lone_surrogate_at(text)
    if position is not None:
        raise BadJsonText("a \\u escape names half of a surrogate pair, not a Unicode character", text, position)
    position = nul_escape_at(text)
    if position is not None:
        raise BadJsonText("a \\u0000 escape: text may not hold NUL characters", text, position)
    position = non_finite_number_at(text)
    if position is not None:
        raise BadJsonText("NaN, Infinity and numbers beyond ±1.8e308 are not JSON numbers", text, position)


class _NonFinite(Exception):
    pass


def _refuse(_: str) -> float:
    raise _NonFinite


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _NonFinite
    return value


def non_finite_number_at(text: str) -> int | None:
    """Where ``text`` (JSON) may hold ``NaN``, ``Infinity`` or a number too large for a float (which Python's json
    reads as inf): validation lets them through, and the database or the response then fails on them. Only text
    with such a token anywhere (a quick scan) is parsed to be sure; invalid JSON is left to the app to refuse."""
    hint = _MAYBE_NON_FINITE.search(text)
    if hint is None:
        return None
    try:
        json.loads(text, parse_constant=_refuse, parse_float=_finite)
    except _NonFinite:
        return hint.start()
    except (ValueError, RecursionError):
        return None
    return None


def _url_has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


async def _refuse_url(scope: Scope, receive: Receive, send: Send) -> None:
    """400 (a WebSocket: closed before it opens); no handler ever sees a NUL, which no store can hold."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": "the URL holds a NUL character"})
        return
    await _reply(send, 400, json.dumps({"detail": "the URL holds a NUL character (%00)"}).encode())


class JsonTextMiddleware:
    """Refuses a URL with a NUL in its path or query (400). Reads a JSON body (bounded by the body-size middleware
    outside) when the app first asks for it and answers 422 if it is not text every store can hold; otherwise hands
    the app the whole body at once. Like the body limit, it replaces whatever the app made of the refused body
    (FastAPI turns a failing read into a 400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _is_json(scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                return _JSON_TYPE.match(value.decode("latin-1")) is not None
        return True  # FastAPI parses a body without a content type as JSON

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and _url_has_nul(scope):
            await _refuse_url(scope, receive, send)
            return
        if scope["type"] != "http" or not self._is_json(scope):
            await self.app(scope, receive, send)
            return
        body = _CheckedBody(receive, send)
        try:
            await self.app(scope, body.receive, body.send)
        except BadJsonText:
            if body.started:
                raise
        if body.refused is not None and not body.started:
            await _reply(send, 422, _invalid_json(body.refused))


class _CheckedBody:
    """One request's JSON body, read whole and checked when the app first asks for it; once it was refused, the
    app's own response is held back (the middleware answers 422 instead)."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.done = False
        self.started = False  # the app's response began before the body was refused: too late for a 422
        self.refused: BadJsonText | None = None

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        message = await _whole_body(self._receive)
        if message["type"] != "http.request":
            return message
        self.done = True
        try:
            check_json_text(message["body"])
        except BadJsonText as exc:
            self.refused = exc
            raise
        return message

    async def send(self, message: Message) -> None:
        if self.refused is not None and not self.started:
            return  # we answer 422 instead
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


async def _whole_body(receive: Receive) -> Message:
    """The request body's chunks as one ``http.request`` message; any other message (a disconnect) as it came."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}


def _invalid_json(refused: BadJsonText) -> bytes:
    """The 422 body: one ``json_invalid`` error that says where in the body the text goes wrong."""
    detail = [{"type": "json_invalid", "loc": ["body", refused.pos], "msg": refused.msg, "input": {}}]
    return json.dumps({"detail": detail}).encode()

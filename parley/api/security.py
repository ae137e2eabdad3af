"""HTTP hardening as plain ASGI middleware.

Not ``BaseHTTPMiddleware``: that buffers and re-wraps responses, which breaks WebSockets and streaming. These only
touch ``http`` scopes and pass everything else through as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from parley.api.console_oidc import issuer_origin
from parley.config import Settings

# A JSON API needs no content at all; a response rendered as a page by mistake can then run nothing.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from jsDelivr and run one inline bootstrap script.
DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.jsdelivr.net; "
    "connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_PATHS = ("/docs", "/redoc")
# The web console (parley/web): its own modules only, no inline script; styles may be set inline by the widgets
# (uPlot, wavesurfer), audio comes from blob: URLs and the AudioWorklet from its module file.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# Browser talk pages served from this origin may use the microphone; nothing else may use anything.
PERMISSIONS_POLICY = "camera=(), geolocation=(), payment=(), usb=(), microphone=(self), interest-cohort=()"


def _is_docs(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in DOCS_PATHS)


def console_csp(settings: Settings) -> str:
    """The console's CSP; where its OIDC sign-in is configured, the browser may also reach the issuer (discovery
    and the token exchange run in the page: parley.api.console_oidc)."""
    origin = issuer_origin(settings)
    return CONSOLE_CSP.replace("connect-src 'self'", f"connect-src 'self' {origin}") if origin else CONSOLE_CSP


def _csp(path: str, console: str = CONSOLE_CSP) -> str:
    if _is_docs(path):
        return DOCS_CSP
    if path == "/" or path == "/console" or path.startswith("/console/"):
        return console
    return API_CSP


class SecurityHeadersMiddleware:
    """Adds defensive headers to every HTTP response, leaving any the app set itself alone."""

    def __init__(self, app: ASGIApp, console_csp: str = CONSOLE_CSP) -> None:
        self.app = app
        self.console_csp = console_csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        defaults = {
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "no-referrer",
            "content-security-policy": _csp(path, self.console_csp),
            "permissions-policy": PERMISSIONS_POLICY,
            "cross-origin-opener-policy": "same-origin",
        }
        if scope.get("scheme") == "https":
            defaults["strict-transport-security"] = "max-age=31536000; includeSubDomains"
        if path == "/v1" or path.startswith("/v1/"):
            defaults["cache-control"] = "no-store"  # tenant data must not land in shared or browser caches

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in defaults.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413: by Content-Length up front, and for chunked bodies as soon
    as the running total passes the limit, without reading further."""

    def __init__(self, app: ASGIApp, max_bytes: int, uploads: Sequence[tuple[str, int]] = ()) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.app = app
        self.max_bytes = max_bytes
        #: (path regex, limit): POSTs to matching paths (document uploads) may send up to that limit instead
        self._uploads = [(re.compile(path), limit) for path, limit in uploads]

    def _limit(self, scope: Scope) -> int:
        if scope.get("method") == "POST":
            for path, limit in self._uploads:
                if path.fullmatch(scope.get("path", "")):
                    return limit
        return self.max_bytes

    async def _reply(self, send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread rest of the body makes the connection unusable
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        refusal = self._refusal_by_length(scope, limit)
        if refusal is not None:
            await self._reply(send, *refusal)
            return
        body = _LimitedBody(receive, send, limit)
        try:
            await self.app(scope, body.receive, body.send)
        except _BodyTooLarge:
            if body.started:
                raise  # too late for a 413: let the server drop the connection
        if body.exceeded and not body.started:
            await self._reply(send, 413, self._too_large(limit))

    @staticmethod
    def _too_large(limit: int) -> str:
        return f"request body too large (limit {limit} bytes)"

    def _refusal_by_length(self, scope: Scope, limit: int) -> tuple[int, str] | None:
        """The answer the Content-Length headers earn before any body is read: 400 unreadable, 413 too large."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return 400, "invalid Content-Length"
                if length > limit:
                    return 413, self._too_large(limit)
        return None


class _LimitedBody:
    """One request's body, counted as the app reads it: past the limit the read raises, the app reads nothing
    more, and its response is held back (the middleware answers 413 instead of what it made of a cut-off body)."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._received = 0
        self.exceeded = False
        self.started = False

    async def receive(self) -> Message:
        if self.exceeded:  # an app that swallowed the error must not read on
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._max_bytes:
                self.exceeded = True
                raise _BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded and not self.started:
            return  # we answer 413 instead
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def add_security(app: FastAPI, settings: Settings) -> None:
    """Install, outermost first: security headers (so every response has them, 413s, 500s and preflights
    included), CORS (so browsers can read those errors), the 500 handler, the body limit, then the JSON text check
    (which reads bodies the limit has bounded)."""
    from parley.api.errors import JsonTextMiddleware, UnhandledErrorMiddleware

    origins = [o.rstrip("/") for o in settings.cors_origins]
    wildcard = "*" in origins
    app.add_middleware(JsonTextMiddleware)
    uploads = (
        (r"/v1/knowledge/[^/]+/documents", settings.knowledge_max_upload_bytes),  # documents are larger
        (r"/v1/campaigns/[^/]+/contacts", settings.campaign_max_upload_bytes),  # contact lists too
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, uploads=uploads)
    app.add_middleware(UnhandledErrorMiddleware, passthrough=(_BodyTooLarge,))
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if wildcard else origins,
        # credentials with a wildcard would let any site act with a user's cookies; auth here is by header anyway
        allow_credentials=bool(origins) and not wildcard,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-API-Key", "Idempotency-Key"],
        expose_headers=["Retry-After", "X-Request-ID", "X-Total-Count"],
        max_age=600,
    )
    app.add_middleware(SecurityHeadersMiddleware, console_csp=console_csp(settings))
    add_trusted_proxies(app, settings)


def add_trusted_proxies(app: FastAPI, settings: Settings) -> None:
    """Outermost: the client address (rate limits, call records) and scheme come from X-Forwarded-For/-Proto only
    when the peer is one of ``PARLEY_TRUSTED_PROXIES``, and then from the right-most untrusted hop, which the
    nearest trusted proxy wrote; entries to its left are whatever the client sent. None trusted by default:
    otherwise anyone reaching the port directly (or through a local tunnel) picks their own address."""
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))

"""A real, small OIDC issuer on 127.0.0.1 for the console's sign-in tests: discovery, JWKS, an authorization
endpoint that approves a test user at once, and a token endpoint that checks the PKCE verifier.

Why not a package: oidc-provider-mock (the well-kept one on PyPI) never checks the PKCE verifier (its authlib
grant has no code-challenge extension), asks for the user in a form, and issues opaque access tokens; these tests
need a token endpoint that refuses a wrong verifier and an RS256 access token whose ``aud`` is the API's.

Use::

    with OidcIssuer(client_id="parley-console", audience="parley-api") as issuer:
        issuer.add_user("ana", tenant="acme", role="editor")
        issuer.login_as = "ana"       # who the next login approves
        issuer.url                    # PARLEY_OIDC_ISSUER
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "console-test-rsa"


@dataclass
class Grant:
    """A code the authorization endpoint handed out, and what its exchange must match."""

    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    sub: str
    scope: str


@dataclass
class OidcIssuer:
    client_id: str
    audience: str
    lifetime_s: int = 600
    login_as: str = ""
    #: the state the authorization endpoint answers with; None: the one the request sent (a forged answer otherwise)
    answer_state: str | None = None
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    lifetimes: dict[str, int] = field(default_factory=dict)
    #: every token request: (code known, verifier matched, issued)
    exchanges: list[tuple[bool, bool, bool]] = field(default_factory=list)
    _codes: dict[str, Grant] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _port: int = 0

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def add_user(self, sub: str, lifetime_s: int | None = None, **claims: Any) -> None:
        """A user the issuer can approve, with claims put in both tokens (``tenant``, ``role`` …)."""
        self.users[sub] = claims
        if lifetime_s is not None:
            self.lifetimes[sub] = lifetime_s

    # --- tokens ---------------------------------------------------------------
    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})

    def tokens_for(self, grant: Grant) -> dict[str, Any]:
        now = int(time.time())
        lifetime = self.lifetimes.get(grant.sub, self.lifetime_s)
        base = {"iss": self.url, "sub": grant.sub, "iat": now, "exp": now + lifetime, **self.users[grant.sub]}
        access = self._sign({**base, "aud": self.audience, "scope": grant.scope, "client_id": grant.client_id})
        nonce = {"nonce": grant.nonce} if grant.nonce else {}
        id_token = self._sign({**base, "aud": grant.client_id, **nonce})
        return {"access_token": access, "id_token": id_token, "token_type": "Bearer", "expires_in": lifetime}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks.json",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": ["none"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}

    # --- the two endpoints with logic -----------------------------------------
    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], str]:
        """302 back to the client with a code (the test user approved at once), or 400 saying what is wrong."""
        problem = None
        if query.get("response_type") != "code":
            problem = "response_type must be code"
        elif query.get("client_id") != self.client_id:
            problem = "unknown client"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            problem = "PKCE with S256 is required"
        elif not query.get("redirect_uri", "").startswith("http://127.0.0.1:"):
            problem = "redirect_uri not registered"
        elif self.login_as not in self.users:
            problem = "no test user to approve"
        if problem:
            return 400, {"content-type": "text/plain"}, problem
        code = secrets.token_urlsafe(24)
        grant = Grant(
            self.client_id, query["redirect_uri"], query["code_challenge"], query.get("nonce"),
            self.login_as, query.get("scope", ""),
        )  # fmt: skip
        with self._lock:
            self._codes[code] = grant
        state = self.answer_state if self.answer_state is not None else query.get("state", "")
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': state})}"
        return 302, {"location": target}, ""

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """RFC 6749 4.1.3 for a public client, with RFC 7636's check of the verifier against the challenge."""
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # a code is good once
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        matched = grant is not None and secrets.compare_digest(digest, grant.challenge)
        ok = (
            grant is not None
            and matched
            and form.get("grant_type") == "authorization_code"
            and form.get("client_id") == grant.client_id
            and form.get("redirect_uri") == grant.redirect_uri
        )
        self.exchanges.append((grant is not None, matched, ok))
        if not ok or grant is None:
            return 400, {"error": "invalid_grant", "error_description": "code, verifier or redirect_uri do not match"}
        return 200, self.tokens_for(grant)

    # --- the HTTP server ------------------------------------------------------
    def start(self) -> OidcIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in {"access-control-allow-origin": "*", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, doc: dict[str, Any]) -> None:
                self._send(status, json.dumps(doc).encode(), {"content-type": "application/json"})

            def do_OPTIONS(self) -> None:  # CORS preflight (the console's POST needs none, a stricter client may)
                allow = {"access-control-allow-methods": "GET, POST", "access-control-allow-headers": "content-type"}
                self._send(204, b"", allow)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/.well-known/openid-configuration":
                    self._json(200, issuer.discovery())
                elif parts.path == "/jwks.json":
                    self._json(200, issuer.jwks())
                elif parts.path == "/authorize":
                    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    status, headers, text = issuer.authorize(query)
                    self._send(status, text.encode(), headers)
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                length = int(self.headers.get("content-length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                self._json(*issuer.token(form))

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port (the issuer unreachable); :meth:`start` opens the same port again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Who is calling: API keys, HS256/OIDC JWTs and short-lived talk tokens, resolved to a tenant-scoped Principal.

Pure logic, no FastAPI: routers pass the raw headers in and turn ``AuthError`` into a response. Error messages never
echo the presented credential, so they are safe to return and to log.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import httpx
import jwt

from parley.config import Settings
from parley.net.clients import shared_client
from parley.offload import off_loop
from parley.store.memories import valid_user_id

LEEWAY_S = 30  # clock skew tolerated on tokens from other systems
TALK_LEEWAY_S = 5  # talk tokens are ours and live a minute: keep their slack small
TALK_AUDIENCE = "parley-talk"
RECORDING_AUDIENCE = "parley-recording"  # parley.api.recording_tokens: one call's recording, for <audio src>
API_KEY_PREFIX = "pk_"
_OIDC_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}  # the only asymmetric algorithms accepted, and their JWK kty
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class Role(StrEnum):
    admin = "admin"
    editor = "editor"
    viewer = "viewer"

    def allows(self, needed: Role) -> bool:
        """Roles nest: admin can do what editor can, editor what viewer can."""
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.viewer: 0, Role.editor: 1, Role.admin: 2}


@dataclass(frozen=True)
class Principal:
    tenant_id: uuid.UUID
    role: Role
    subject: str  # key id or JWT ``sub``
    kind: Literal["api_key", "jwt", "talk_token"]
    scopes: tuple[str, ...] = ()
    key_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None  # talk tokens are bound to one agent
    user_id: str | None = None  # a talk token's client-given user id (signed: the browser cannot change it)


@dataclass(frozen=True)
class TalkGrant:
    """A verified talk token: who it speaks for, and what one-use bookkeeping needs (its id and expiry)."""

    principal: Principal
    token_id: str
    expires_at: float


class AuthError(Exception):
    """401: who you are is unknown; 403: known but not allowed; 503: the identity provider cannot be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class KeyInfo:
    tenant_id: uuid.UUID
    key_id: uuid.UUID
    role: Role
    scopes: tuple[str, ...]


def _role_from_claims(claims: dict[str, Any]) -> Role:
    """``role``, else the first known entry of ``roles``, else viewer (least privilege)."""
    candidates: list[Any] = [claims.get("role")]
    roles = claims.get("roles")
    if isinstance(roles, list):
        candidates += roles
    for c in candidates:
        if isinstance(c, str) and c in Role.__members__:
            return Role(c)
    return Role.viewer


def _scopes_from_claims(claims: dict[str, Any]) -> tuple[str, ...]:
    scope, scp = claims.get("scope"), claims.get("scp")
    if isinstance(scope, str):
        return tuple(scope.split())
    if isinstance(scp, list):
        return tuple(s for s in scp if isinstance(s, str))
    return ()


class Authenticator:
    """Turns request headers into a Principal.

    Talk tokens are signed with ``PARLEY_TOKEN_SECRET``; unset, a random secret is generated per process, so a token
    issued by one worker fails on another: multi-worker deployments must set ``PARLEY_TOKEN_SECRET``.
    """

    def __init__(
        self,
        settings: Settings,
        lookup_key: Callable[[str], Awaitable[KeyInfo | None]],
        tenant_id_for: Callable[[str], Awaitable[uuid.UUID]],
    ) -> None:
        if settings.oidc_issuer and not settings.oidc_audience:
            # without an audience any token the issuer minted for any application would be accepted
            raise ValueError("PARLEY_OIDC_AUDIENCE must be set when PARLEY_OIDC_ISSUER is")
        self._settings = settings
        self._lookup_key = lookup_key
        self._tenant_id_for = tenant_id_for
        secret = settings.token_secret.get_secret_value() if settings.token_secret else ""
        self._talk_secret = secret.encode() or secrets.token_bytes(32)
        self._jwks: jwt.PyJWKClient | None = None
        self._jwks_lock = asyncio.Lock()

    # --- headers -> principal -----------------------------------------------------
    async def authenticate(self, authorization: str | None, x_api_key: str | None) -> Principal:
        credential = self._credential(authorization, x_api_key)
        if credential.startswith(API_KEY_PREFIX):
            info = await self._lookup_key(credential)
            if info is None:
                raise AuthError(401, "invalid API key")
            return Principal(info.tenant_id, info.role, str(info.key_id), "api_key", tuple(info.scopes), info.key_id)
        if _JWT_SHAPE.match(credential):
            return await self._verify_jwt(credential)
        raise AuthError(401, "unrecognised credential")

    @staticmethod
    def _credential(authorization: str | None, x_api_key: str | None) -> str:
        bearer: str | None = None
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError(401, "Authorization must be 'Bearer <token>'")
            bearer = value.strip()
        key = x_api_key.strip() if x_api_key else None
        if bearer and key and bearer != key:
            raise AuthError(401, "send one credential, not two different ones")
        credential = bearer or key
        if not credential:
            raise AuthError(401, "missing credentials: send 'Authorization: Bearer …' or 'X-API-Key: …'")
        if x_api_key and not bearer and not credential.startswith(API_KEY_PREFIX):
            raise AuthError(401, "X-API-Key takes an API key only")
        return credential

    # --- JWTs -----------------------------------------------------------------
    async def _verify_jwt(self, token: str) -> Principal:
        s = self._settings
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise AuthError(401, "malformed token") from None
        try:
            if alg == "HS256" and s.jwt_secret:
                claims = jwt.decode(
                    token,
                    s.jwt_secret.get_secret_value(),
                    algorithms=["HS256"],
                    audience=s.jwt_audience,
                    issuer=s.jwt_issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["exp"], "verify_aud": bool(s.jwt_audience)},
                )
                if claims.get("aud") == TALK_AUDIENCE:
                    raise AuthError(401, "talk tokens only open talk sessions")
                if claims.get("aud") == RECORDING_AUDIENCE:
                    raise AuthError(401, "recording tokens only fetch their recording")
            elif alg in _OIDC_KEY_TYPES and s.oidc_issuer:
                key = await self._oidc_key(token, alg)
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=s.oidc_audience,
                    issuer=s.oidc_issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iss", "aud"]},
                )
            else:
                raise AuthError(401, "token algorithm not accepted")
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired") from None
        except jwt.PyJWTError as e:
            raise AuthError(401, f"invalid token ({type(e).__name__})") from None
        self._check_lifetime(claims)
        tenant = next((claims[c] for c in ("tenant", "tid", "org_id") if claims.get(c)), None)
        if not isinstance(tenant, str):
            raise AuthError(403, "token names no tenant (claim 'tenant', 'tid' or 'org_id')")
        return Principal(
            tenant_id=await self._tenant_id_for(tenant),
            role=_role_from_claims(claims),
            subject=str(claims.get("sub", "")),
            kind="jwt",
            scopes=_scopes_from_claims(claims),
        )

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """Refuse tokens meant to live longer than ``PARLEY_JWT_MAX_LIFETIME_S``: a leaked token that never expires
        is a permanent credential. Measured from ``iat`` (or now, when absent or later) to ``exp``."""
        now = time.time()
        iat = claims.get("iat")
        start = min(iat, now) if isinstance(iat, int | float) and not isinstance(iat, bool) else now
        if float(claims["exp"]) - start > self._settings.jwt_max_lifetime_s + LEEWAY_S:
            raise AuthError(401, f"token lifetime exceeds {self._settings.jwt_max_lifetime_s} s")

    async def _oidc_key(self, token: str, alg: str) -> jwt.PyJWK:
        """The issuer's key for the token's ``kid``, whose type must match the header's alg (no confusion)."""
        if not jwt.get_unverified_header(token).get("kid"):
            raise AuthError(401, "token has no key id")
        client = await self._jwks_client()
        try:
            # PyJWKClient fetches over blocking urllib: keep it off the event loop
            key = await off_loop(client.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError:
            raise AuthError(503, "identity provider keys unavailable") from None
        except jwt.PyJWKClientError:
            raise AuthError(401, "unknown signing key") from None
        if key.algorithm_name != alg or key.key_type != _OIDC_KEY_TYPES[alg]:
            raise AuthError(401, "token algorithm does not match its key")
        return key

    async def _jwks_client(self) -> jwt.PyJWKClient:
        async with self._jwks_lock:
            if self._jwks is None:
                uri = self._settings.oidc_jwks_url or await self._discover_jwks_uri()
                # cache the key set for 5 min, not keys forever: a key the issuer withdraws stops working
                self._jwks = jwt.PyJWKClient(uri, cache_jwk_set=True, lifespan=300, timeout=10)
            return self._jwks

    async def _discover_jwks_uri(self) -> str:
        issuer = str(self._settings.oidc_issuer).rstrip("/")
        try:
            r = await shared_client("oidc", timeout=10).get(f"{issuer}/.well-known/openid-configuration")
            r.raise_for_status()
            config = r.json()
        except (httpx.HTTPError, ValueError):
            raise AuthError(503, "identity provider discovery failed") from None
        if str(config.get("issuer", "")).rstrip("/") != issuer or not isinstance(config.get("jwks_uri"), str):
            raise AuthError(503, "identity provider discovery document is not for this issuer")
        return str(config["jwks_uri"])

    @property
    def signing_secret(self) -> bytes:
        """The HS256 secret of Parley's own short-lived tokens (talk, recording): PARLEY_TOKEN_SECRET, else this
        process's random one."""
        return self._talk_secret

    # --- talk tokens ----------------------------------------------------------
    def issue_talk_token(
        self, principal: Principal, agent_id: uuid.UUID, ttl_s: int = 60, user_id: str | None = None
    ) -> str:
        """A token a browser puts in the WebSocket URL (it cannot set headers there), good for one agent only;
        ``user_id`` (the app's user, remembered like a caller's number) is signed into it."""
        if principal.kind == "talk_token":
            raise AuthError(403, "a talk token cannot issue talk tokens")
        if not 1 <= ttl_s <= 3600:
            raise ValueError("ttl_s must be between 1 and 3600")
        if user_id is not None and not valid_user_id(user_id):
            raise ValueError("user_id must be 1 to 64 characters of A-Z a-z 0-9 . _ @ : + -")
        now = int(time.time())
        claims = {
            "aud": TALK_AUDIENCE,
            "sub": principal.subject,
            "tenant_id": str(principal.tenant_id),
            "role": str(principal.role),
            "agent_id": str(agent_id),
            **({"key_id": str(principal.key_id)} if principal.key_id else {}),  # checked for revocation at use
            **({"user_id": user_id} if user_id is not None else {}),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + ttl_s,
        }
        return jwt.encode(claims, self._talk_secret, algorithm="HS256")

    def verify_talk_token(self, token: str, agent_id: uuid.UUID) -> Principal:
        """Signature, audience, expiry and agent only: sessions open through ``redeem_talk_token``."""
        return self.check_talk_token(token, agent_id).principal

    async def redeem_talk_token(
        self,
        token: str,
        agent_id: uuid.UUID,
        use_once: Callable[[str, float], Awaitable[bool]],
        key_is_live: Callable[[uuid.UUID, uuid.UUID], Awaitable[bool]],
    ) -> Principal:
        """Verify a talk token and spend it: one session per token, and none once the key that minted it is revoked.

        ``use_once(key, ttl_s)`` is ``NonceStore.use`` (shared by all workers with Redis); the token id is
        remembered until the token expires. ``key_is_live(tenant_id, key_id)`` looks the minting key up.
        """
        grant = self.check_talk_token(token, agent_id)
        who = grant.principal
        if who.key_id is not None and not await key_is_live(who.tenant_id, who.key_id):
            raise AuthError(401, "the key that issued this talk token has been revoked")
        ttl_s = max(1.0, grant.expires_at - time.time() + TALK_LEEWAY_S)
        if not await use_once(f"talk-token:{grant.token_id}", ttl_s):
            raise AuthError(401, "talk token already used")
        return who

    def check_talk_token(self, token: str, agent_id: uuid.UUID) -> TalkGrant:
        try:
            claims = jwt.decode(
                token,
                self._talk_secret,
                algorithms=["HS256"],
                audience=TALK_AUDIENCE,
                leeway=TALK_LEEWAY_S,
                options={"require": ["exp", "aud", "jti", "tenant_id", "agent_id", "role"]},
            )
            tenant_id, bound_agent, role = uuid.UUID(claims["tenant_id"]), uuid.UUID(claims["agent_id"]), claims["role"]
            key_id = uuid.UUID(claims["key_id"]) if "key_id" in claims else None
            token_id, expires_at, user_id = claims["jti"], float(claims["exp"]), claims.get("user_id")
            if not isinstance(token_id, str):
                raise TypeError("jti")
            if user_id is not None and not valid_user_id(user_id):
                raise TypeError("user_id")
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "talk token expired") from None
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
            raise AuthError(401, "invalid talk token") from None
        if role not in Role.__members__:
            raise AuthError(401, "invalid talk token")
        if bound_agent != agent_id:
            raise AuthError(403, "talk token is for another agent")
        who = Principal(
            tenant_id,
            Role(role),
            str(claims.get("sub", "")),
            "talk_token",
            key_id=key_id,
            agent_id=bound_agent,
            user_id=user_id,
        )
        return TalkGrant(who, token_id, expires_at)

"""Request dependencies: the app state, the authenticated principal (rate-limited), role checks."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal, get_args

from fastapi import Depends, Header, HTTPException, Request
from starlette.requests import HTTPConnection

from parley.api.auth import AuthError, Principal, Role
from parley.api.state import AppState
from parley.store.ratelimit import UNAVAILABLE_RETRY_S, RateLimitUnavailable


def app_state(conn: HTTPConnection) -> AppState:
    """The service's state, for HTTP requests and WebSockets alike."""
    state: AppState = conn.app.state.parley
    return state


State = Annotated[AppState, Depends(app_state)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def rate_limit(state: AppState, key: str, limit: str) -> None:
    try:
        decision = await state.limiter.hit(key, limit)
    except RateLimitUnavailable as exc:
        retry = {"Retry-After": str(UNAVAILABLE_RETRY_S)}
        raise HTTPException(503, f"{exc}: try again shortly", headers=retry) from None
    if not decision.allowed:
        raise HTTPException(
            status_code=429,
            detail="rate limit exceeded",
            headers={"Retry-After": str(max(1, round(decision.retry_after)))},
        )


async def principal(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """Authenticate the request; both the client address and the credential are rate limited."""
    await rate_limit(state, f"addr:{client_address(request)}", state.settings.rate_limit_per_address)
    try:
        who = await state.auth.authenticate(authorization, x_api_key)
    except AuthError as exc:
        raise HTTPException(
            status_code=exc.status,
            detail=exc.message,
            headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None,
        ) from None
    await rate_limit(state, f"who:{who.tenant_id}:{who.subject}", state.settings.rate_limit_per_key)
    return who


#: Parley's scopes. A credential that carries any of them is limited to those; one with none is limited
#: only by its role (identity providers put their own scopes, such as "openid", in tokens).
Scope = Literal["agents:read", "agents:write", "calls:read", "calls:write", "keys", "talk"]
SCOPES: tuple[Scope, ...] = get_args(Scope)


def effective_scopes(who: Principal) -> tuple[Scope, ...]:
    """The Parley scopes ``who`` holds: those it carries, or all of them when it carries none."""
    mine = tuple(s for s in SCOPES if s in who.scopes)
    return mine or SCOPES


def has_scope(who: Principal, scope: Scope) -> bool:
    return scope in effective_scopes(who)


def access(needed: Role, scope: Scope) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.role.allows(needed):
            raise HTTPException(status_code=403, detail=f"this needs the {needed.value} role")
        if not has_scope(who, scope):
            raise HTTPException(status_code=403, detail=f"this needs the {scope} scope")
        return who

    return check


ReadAgents = Annotated[Principal, Depends(access(Role.viewer, "agents:read"))]
WriteAgents = Annotated[Principal, Depends(access(Role.editor, "agents:write"))]
ReadCalls = Annotated[Principal, Depends(access(Role.viewer, "calls:read"))]
WriteCalls = Annotated[Principal, Depends(access(Role.editor, "calls:write"))]
ManageKeys = Annotated[Principal, Depends(access(Role.admin, "keys"))]
Talk = Annotated[Principal, Depends(access(Role.viewer, "talk"))]

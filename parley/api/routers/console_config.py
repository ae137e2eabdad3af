"""``GET /v1/console/config``: what the web console's sign-in page offers (parley.api.console_oidc).

Public and tenant-free: the sign-in page asks before it holds any credential, and the answer (an issuer, a public
client id, scopes, an audience) is what the issuer's own login page shows anyway.
"""

from __future__ import annotations

from fastapi import APIRouter

from parley.api.console_oidc import ConsoleConfig, console_config
from parley.api.deps import State

router = APIRouter(prefix="/v1/console", tags=["console"])


@router.get("/config", response_model=ConsoleConfig, summary="What the console's sign-in offers")
async def config(state: State) -> ConsoleConfig:
    """Whether the console offers signing in through the OIDC issuer's login (``PARLEY_OIDC_CLIENT_ID`` set beside
    ``PARLEY_OIDC_ISSUER`` and ``PARLEY_OIDC_AUDIENCE``), and with which issuer, client id and scopes. No credential
    needed; nothing secret."""
    return console_config(state.settings)

"""The console's sign-in through an OIDC issuer: what the browser needs to run the login itself.

The console is a public client (no secret: it runs in the browser) doing Authorization Code with PKCE; the server
only says whether that sign-in is offered and with which issuer, client and scopes, and lets the browser reach the
issuer (its origin joins the console's CSP ``connect-src``). The tokens it gets back are checked by
:class:`parley.api.auth.Authenticator` like any other OIDC bearer token: nothing here trusts them.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from parley.config import Settings

#: where the issuer sends the browser back (register it with the issuer as the client's redirect URI)
CALLBACK_PATH = "/console/oidc/callback"
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


class OidcSignIn(BaseModel):
    """The issuer's login, as the console's sign-in page offers it."""

    issuer: str = Field(description="PARLEY_OIDC_ISSUER: discovery is at <issuer>/.well-known/openid-configuration")
    client_id: str = Field(description="PARLEY_OIDC_CLIENT_ID: the console's public client (no secret)")
    scopes: str = Field(description="PARLEY_OIDC_SCOPES, space-separated")
    audience: str = Field(
        description="PARLEY_OIDC_AUDIENCE: the aud the API accepts; the console sends the token that carries it "
        "(the access token, else the ID token)"
    )
    redirect_path: str = Field(description="the console's callback path, to append to its own origin")


class ConsoleConfig(BaseModel):
    """What the console's sign-in page offers before anyone has signed in. Nothing in it is secret."""

    oidc: OidcSignIn | None = Field(description="the issuer's login, or null where OIDC sign-in is not configured")


def issuer_origin(settings: Settings) -> str | None:
    """``scheme://host[:port]`` of the issuer when the console's OIDC sign-in is configured, else None.

    Only http(s) with a plain host: the origin goes into a CSP header, where a space or ``;`` would add directives.
    """
    if not (settings.oidc_issuer and settings.oidc_client_id and settings.oidc_audience):
        return None
    parts = urlsplit(settings.oidc_issuer)
    if parts.scheme not in ("https", "http") or not _HOST.match(parts.netloc):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def console_config(settings: Settings) -> ConsoleConfig:
    if issuer_origin(settings) is None:
        return ConsoleConfig(oidc=None)
    assert settings.oidc_issuer and settings.oidc_client_id and settings.oidc_audience  # issuer_origin checked
    return ConsoleConfig(
        oidc=OidcSignIn(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            scopes=settings.oidc_scopes,
            audience=settings.oidc_audience,
            redirect_path=CALLBACK_PATH,
        )
    )

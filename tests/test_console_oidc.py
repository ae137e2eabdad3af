"""Signing in to the console through an OIDC issuer's login, in a real Chromium against a real `parley serve`.

The issuer is real and local (tests/support/oidc_issuer.py: discovery, JWKS, an authorization endpoint that approves
the test user at once, a token endpoint that checks the PKCE verifier, RS256 tokens, CORS). A person clicks "Sign in
with 127.0.0.1:…", comes back signed in as the token's tenant and role, and signs out; a forged answer (wrong
state), an unreachable issuer and an expired token each end on the sign-in page saying why; a viewer's token gets
no edit controls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import Browser, Page, expect

from parley.api.console_oidc import CALLBACK_PATH, console_config
from parley.api.security import CONSOLE_CSP, console_csp
from parley.config import Settings

from .support.browser import SIGNIN_TIMEOUT_MS, browser, browsers, new_context, playwright, screenshot
from .support.oidc_issuer import OidcIssuer
from .support.served import AGENT
from .support.service import Service, register_secret

__all__ = ["browser", "browsers", "playwright"]  # fixtures, imported for pytest

CLIENT_ID = "parley-console"
AUDIENCE = "parley-api"


@pytest.fixture(scope="module")
def issuer(tenant_name: str) -> Iterator[OidcIssuer]:
    with OidcIssuer(client_id=CLIENT_ID, audience=AUDIENCE) as running:
        running.add_user("ana@example.com", tenant=tenant_name, role="editor", name="Ana")
        running.add_user("vic@example.com", tenant=tenant_name, role="viewer", name="Vic")
        running.add_user("eve@example.com", lifetime_s=15, tenant=tenant_name, role="editor")
        running.add_user("nobody@example.com", role="admin")  # no tenant claim: the API refuses the token
        yield running


@pytest.fixture(scope="module")
def service_env(issuer: OidcIssuer) -> dict[str, str]:
    return {"PARLEY_OIDC_ISSUER": issuer.url, "PARLEY_OIDC_AUDIENCE": AUDIENCE, "PARLEY_OIDC_CLIENT_ID": CLIENT_ID}


@pytest.fixture(scope="module")
def agent_name(service: Service, key: str) -> str:
    """An agent of the tenant, made with an API key: the issuer's user must see it (same tenant, by name)."""
    with service.client(key) as c:
        created = c.post("/v1/agents", json={**AGENT, "name": "Front Desk"})
        assert created.status_code == 201, created.text
    return "Front Desk"


def open_page(browser: Browser, service: Service) -> Page:
    page = new_context(browser, service, permissions=None).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.parley_errors = errors  # type: ignore[attr-defined]
    return page


def sign_in_through_issuer(page: Page, service: Service, issuer: OidcIssuer, user: str) -> None:
    issuer.login_as = user
    page.goto(f"{service.url}/")
    button = page.get_by_test_id("signin-oidc")
    expect(button).to_have_text(f"Sign in with {issuer.url.removeprefix('http://')}", timeout=SIGNIN_TIMEOUT_MS)
    button.click()


def stored(page: Page, name: str) -> Any:
    return page.evaluate("(k) => sessionStorage.getItem(k)", name)


def test_the_console_config_and_csp_name_the_issuer(service: Service, issuer: OidcIssuer) -> None:
    config = httpx.get(f"{service.url}/v1/console/config", timeout=10)  # no credential: the sign-in page asks
    assert config.status_code == 200
    assert config.json() == {"oidc": {"issuer": issuer.url, "client_id": CLIENT_ID, "scopes": "openid profile email",
                                      "audience": AUDIENCE, "redirect_path": CALLBACK_PATH}}  # fmt: skip
    assert config.headers["cache-control"] == "no-store"
    csp = httpx.get(f"{service.url}/", timeout=10).headers["content-security-policy"]
    assert f"connect-src 'self' {issuer.url};" in csp and "script-src 'self';" in csp
    callback = httpx.get(f"{service.url}{CALLBACK_PATH}?code=x&state=y", timeout=10)
    assert callback.status_code == 200 and callback.headers["content-security-policy"] == csp


def test_without_a_client_id_nothing_is_offered_and_the_csp_stays_closed() -> None:
    plain = Settings(_env_file=None, oidc_issuer="https://login.example.com/t", oidc_audience=AUDIENCE)
    assert console_csp(plain) == CONSOLE_CSP
    assert console_config(plain).oidc is None  # the sign-in page offers the API key only
    offered = plain.model_copy(update={"oidc_client_id": CLIENT_ID})
    assert "connect-src 'self' https://login.example.com;" in console_csp(offered)
    hostile = plain.model_copy(update={"oidc_client_id": CLIENT_ID, "oidc_issuer": "https://a.example; script-src *"})
    assert console_csp(hostile) == CONSOLE_CSP  # not a plain origin: not put in the header


def test_sign_in_through_the_issuer_as_the_tokens_tenant_then_sign_out(
    browser: Browser, service: Service, issuer: OidcIssuer, agent_name: str
) -> None:
    page = open_page(browser, service)
    sign_in_through_issuer(page, service, issuer, "ana@example.com")
    expect(page.get_by_test_id("agents-view")).to_be_visible(timeout=SIGNIN_TIMEOUT_MS)
    expect(page.get_by_test_id("agents-view")).to_contain_text(agent_name)
    expect(page.get_by_test_id("role")).to_have_text("editor")
    expect(page.get_by_test_id("new-agent")).to_be_visible()
    assert page.evaluate("() => location.search") == ""  # the code and state left the address
    assert page.evaluate("() => location.pathname + location.hash") == "/#/agents"
    token = stored(page, "parley.key")
    register_secret(token)  # no log may hold it
    claims = jwt.decode(token, issuer.key.public_key(), algorithms=["RS256"], audience=AUDIENCE)
    assert (claims["aud"], claims["sub"], claims["role"]) == (AUDIENCE, "ana@example.com", "editor")  # the access token
    assert issuer.exchanges[-1] == (True, True, True)  # the code was exchanged with the matching verifier
    assert page.evaluate("() => localStorage.length") == 0
    screenshot(page, "signin-oidc-agents")
    page.get_by_test_id("signout").click()
    page.wait_for_url(re.compile(r"#/signin"))
    assert page.evaluate("() => sessionStorage.length") == 0  # the token and the login's state are forgotten
    expect(page.get_by_test_id("signin-oidc")).to_be_visible()
    assert page.parley_errors == []  # type: ignore[attr-defined]


def test_a_wrong_state_is_refused_with_a_message(browser: Browser, service: Service, issuer: OidcIssuer) -> None:
    page = open_page(browser, service)
    issuer.answer_state = "forged-by-someone-else"
    exchanges = len(issuer.exchanges)
    try:
        sign_in_through_issuer(page, service, issuer, "ana@example.com")
        notice = page.get_by_test_id("signin-notice")
        expect(notice).to_contain_text("state mismatch", timeout=SIGNIN_TIMEOUT_MS)
    finally:
        issuer.answer_state = None
    assert page.evaluate("() => location.search") == ""
    assert stored(page, "parley.key") is None
    assert len(issuer.exchanges) == exchanges  # the code was never sent to the token endpoint
    screenshot(page, "signin-oidc-wrong-state")
    # the answer replayed (the same callback address again) finds no login waiting in the tab either
    page.goto(f"{service.url}{CALLBACK_PATH}?code=replayed&state=forged-by-someone-else")
    expect(page.get_by_test_id("signin-notice")).to_contain_text("not started in this tab")
    assert stored(page, "parley.key") is None


def test_a_viewer_token_gets_no_edit_controls(browser: Browser, service: Service, issuer: OidcIssuer) -> None:
    page = open_page(browser, service)
    sign_in_through_issuer(page, service, issuer, "vic@example.com")
    expect(page.get_by_test_id("role")).to_have_text("viewer", timeout=SIGNIN_TIMEOUT_MS)
    expect(page.get_by_test_id("agents-view")).to_be_visible()
    expect(page.get_by_test_id("new-agent")).to_have_count(0)
    expect(page.get_by_test_id("nav-keys")).to_have_count(0)
    register_secret(stored(page, "parley.key"))
    forced = page.evaluate(
        """async () => (await fetch('/v1/agents', {method: 'POST', headers: {
            authorization: `Bearer ${sessionStorage.getItem('parley.key')}`, 'content-type': 'application/json'},
            body: JSON.stringify({name: 'Not Allowed', system_prompt: 'x'})})).status"""
    )
    assert forced == 403  # the API refuses it too


def test_an_unreachable_issuer_says_so(browser: Browser, service: Service, issuer: OidcIssuer) -> None:
    page = open_page(browser, service)
    issuer.login_as = "ana@example.com"
    page.goto(f"{service.url}/")
    expect(page.get_by_test_id("signin-oidc")).to_be_visible(timeout=SIGNIN_TIMEOUT_MS)
    issuer.stop()
    try:
        page.get_by_test_id("signin-oidc").click()
        expect(page.get_by_test_id("signin-error")).to_contain_text("cannot be reached", timeout=SIGNIN_TIMEOUT_MS)
    finally:
        issuer.start()
    assert stored(page, "parley.key") is None
    expect(page.get_by_test_id("signin-key")).to_be_visible()  # an API key still works meanwhile


def test_an_expired_token_goes_back_to_sign_in_with_a_message(
    browser: Browser, service: Service, issuer: OidcIssuer
) -> None:
    page = open_page(browser, service)
    exchanges = len(issuer.exchanges)
    sign_in_through_issuer(page, service, issuer, "eve@example.com")  # a 15 s token
    notice = page.get_by_test_id("signin-notice")
    expect(notice).to_contain_text("has expired", timeout=90_000)
    assert issuer.exchanges[exchanges:] == [(True, True, True)]  # it had signed in
    assert stored(page, "parley.key") is None
    page.evaluate("() => { location.hash = '#/agents' }")
    page.wait_for_url(re.compile(r"#/signin"))  # no token, no console


def test_a_token_the_api_refuses_is_not_kept(browser: Browser, service: Service, issuer: OidcIssuer) -> None:
    page = open_page(browser, service)
    sign_in_through_issuer(page, service, issuer, "nobody@example.com")
    notice = page.get_by_test_id("signin-notice")
    expect(notice).to_contain_text("the API refused the issuer's token", timeout=SIGNIN_TIMEOUT_MS)
    expect(notice).to_contain_text("names no tenant")
    assert stored(page, "parley.key") is None and page.evaluate("() => location.search") == ""

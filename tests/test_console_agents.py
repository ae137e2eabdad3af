"""Building agents in the console, in a real Chromium against a real `parley serve` (SQLite, one per module).

What a person does: sign in with a key, create an agent from the receptionist template, break its YAML (the
field's error shows, nothing is saved), fix and save (version 2), compare v1..v2, restore v1, and sign out (the
key is forgotten). A viewer's key sees no edit controls and the API refuses a forced change. Keys are created
(the secret shown once) and revoked, numbers mapped, analytics drawn. Every step checks the API's own answer,
and each view leaves a screenshot in .parley/screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from .support.browser import Console, browser, browsers, console, playwright, screenshot
from .support.served import AGENT
from .support.service import Service, register_secret

__all__ = ["browser", "browsers", "console", "playwright"]  # fixtures, imported for pytest

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PHONE: ViewportSize = {"width": 390, "height": 844}


def no_page_errors(page: Page) -> None:
    """Nothing broke in the page; refused requests (a 422 while typing, a 403 forced) are logged by Chromium as
    'Failed to load resource' and are expected here."""
    errors = [e for e in page.parley_errors if "Failed to load resource" not in e]  # type: ignore[attr-defined]
    assert errors == []


def make_agent(service: Service, key: str, name: str, **extra: Any) -> dict[str, Any]:
    with service.client(key) as c:
        created = c.post("/v1/agents", json={**AGENT, "name": name, **extra})
        assert created.status_code == 201, created.text
        return dict(created.json())


def agent_now(service: Service, key: str, ref: str) -> dict[str, Any]:
    with service.client(key) as c:
        got = c.get(f"/v1/agents/{ref}")
        assert got.status_code == 200, got.text
        return dict(got.json())


def set_yaml(page: Page, text: str) -> None:
    page.get_by_test_id("tab-yaml").click()
    page.get_by_test_id("yaml-editor").fill(text)


def validity(page: Page, status: str) -> None:
    expect(page.get_by_test_id("validity")).to_have_attribute("data-status", status, timeout=10_000)


@pytest.fixture(scope="module")
def viewer_key(service: Service, tenant_name: str, key: str) -> str:
    return service.create_key(tenant_name, role="viewer")


def test_create_an_agent_from_the_receptionist_template(console: Console, service: Service, key: str) -> None:
    page = console(service, key)
    expect(page.get_by_test_id("agents-view")).to_be_visible()
    page.get_by_test_id("new-agent").click()
    screenshot(page, "agents-new")
    page.get_by_test_id("template-receptionist").click()
    editor = page.get_by_test_id("yaml-editor")
    expect(editor).to_have_value(re.compile(r"name: Receptionist"))
    validity(page, "valid")
    screenshot(page, "agent-new-receptionist")
    page.get_by_test_id("save").click()
    page.wait_for_url(re.compile(rf"#/agents/{UUID}$"))
    expect(page.get_by_test_id("agent-version")).to_have_text("1")
    agent_id = page.get_by_test_id("agent-id").inner_text()
    saved = agent_now(service, key, agent_id)
    assert (saved["name"], saved["version"]) == ("Receptionist", 1)
    assert saved["document"]["knowledge"]["collections"] == ["bright-smile"]  # the packaged template, as written
    page.get_by_test_id("nav-agents").click()
    expect(page.get_by_test_id("agents-row").filter(has_text="Receptionist")).to_be_visible()
    screenshot(page, "agents")
    no_page_errors(page)


def test_a_bad_document_shows_the_field_error_and_saves_nothing_then_versions(
    console: Console, service: Service, key: str
) -> None:
    agent = make_agent(service, key, "Edit Me")
    page = console(service, key, route=f"#/agents/{agent['id']}")
    expect(page.get_by_test_id("agent-form")).to_be_visible()
    screenshot(page, "agent-form")
    set_yaml(page, "name: [unclosed\n")  # not YAML at all: the parser's line shows, no request is needed
    expect(page.get_by_test_id("field-error")).to_contain_text("line")
    expect(page.get_by_test_id("save")).to_be_disabled()

    page.get_by_test_id("discard").click()
    expect(page.get_by_test_id("yaml-editor")).to_have_value(re.compile("max_history_turns: 8"))  # re-rendered
    text = page.get_by_test_id("yaml-editor").input_value()
    page.get_by_test_id("yaml-editor").fill(text.replace("max_history_turns: 8", "max_history_turns: 500"))
    error = page.locator('[data-testid=field-error][data-loc="max_history_turns"]')
    expect(error).to_contain_text("100")  # the API's own 422, by its loc
    expect(page.get_by_test_id("save")).to_be_disabled()
    screenshot(page, "agent-yaml-error")
    assert agent_now(service, key, agent["id"])["version"] == 1  # nothing saved

    page.get_by_test_id("yaml-editor").fill(text.replace("max_history_turns: 8", "max_history_turns: 12"))
    validity(page, "valid")
    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("saved")).to_contain_text("version 2")
    expect(page.get_by_test_id("agent-version")).to_have_text("2")
    assert agent_now(service, key, agent["id"])["document"]["max_history_turns"] == 12

    page.get_by_test_id("tab-history").click()
    page.get_by_test_id("diff-from").select_option("1")
    page.get_by_test_id("diff-to").select_option("2")
    page.get_by_test_id("diff-show").click()
    diff = page.get_by_test_id("diff")
    expect(diff).to_contain_text("-max_history_turns: 8")
    expect(diff).to_contain_text("+max_history_turns: 12")
    screenshot(page, "agent-history-diff")

    restore = page.get_by_test_id("restore-1")
    restore.click()
    restore.click()  # the second click confirms
    expect(page.get_by_test_id("restored")).to_contain_text("Version 1 restored as version 3")
    now = agent_now(service, key, agent["id"])
    assert (now["version"], now["document"]["max_history_turns"]) == (3, 8)
    expect(page.get_by_test_id("version-3")).to_be_visible()
    no_page_errors(page)


def test_the_form_edits_the_same_document(console: Console, service: Service, key: str) -> None:
    agent = make_agent(service, key, "Form Agent")
    page = console(service, key, route=f"#/agents/{agent['id']}")
    page.get_by_test_id("form-greeting").fill("Good morning, clinic speaking.")
    page.get_by_test_id("form-language").fill("English")  # not a language tag: the field's own error
    expect(page.locator("#f-language[aria-invalid=true]")).to_be_visible(timeout=10_000)
    page.get_by_test_id("form-language").fill("en-GB")
    validity(page, "valid")
    expect(page.get_by_test_id("talk-draft")).to_have_attribute("href", f"#/talk/{agent['id']}?draft=1")
    draft = page.evaluate(f"() => JSON.parse(sessionStorage.getItem('parley.draft.{agent['id']}'))")
    assert (draft["greeting"], draft["language"]) == ("Good morning, clinic speaking.", "en-GB")
    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("agent-version")).to_have_text("2")
    saved = agent_now(service, key, agent["id"])["document"]
    assert (saved["greeting"], saved["language"]) == ("Good morning, clinic speaking.", "en-GB")
    assert page.evaluate(f"() => sessionStorage.getItem('parley.draft.{agent['id']}')") is None
    no_page_errors(page)


def test_a_viewer_sees_no_edit_controls_and_the_api_refuses_a_forced_change(
    console: Console, service: Service, key: str, viewer_key: str
) -> None:
    agent = make_agent(service, key, "Read Only")
    with service.client(key) as c:  # a second version, so there is something to restore
        c.put(f"/v1/agents/{agent['id']}", json={**AGENT, "name": "Read Only", "greeting": "Hello again."})
    page = console(service, viewer_key)
    expect(page.get_by_test_id("role")).to_have_text("viewer")
    expect(page.get_by_test_id("agents-view")).to_be_visible()
    expect(page.get_by_test_id("new-agent")).to_have_count(0)
    expect(page.get_by_test_id("nav-keys")).to_have_count(0)
    page.evaluate("(r) => { location.hash = r }", f"#/agents/{agent['id']}")
    expect(page.get_by_test_id("read-only")).to_be_visible()
    for control in ("save", "delete-agent", "discard", "talk-draft"):
        expect(page.get_by_test_id(control)).to_have_count(0)
    expect(page.get_by_test_id("form-name")).to_have_attribute("readonly", re.compile(".*"))
    page.get_by_test_id("tab-yaml").click()
    expect(page.get_by_test_id("yaml-editor")).to_have_attribute("readonly", re.compile(".*"))
    page.get_by_test_id("tab-history").click()
    expect(page.get_by_test_id("version-1")).to_be_visible()
    expect(page.locator("[data-testid^=restore-]")).to_have_count(0)
    expect(page.get_by_test_id("diff")).to_contain_text("Hello again.")  # reading the history is allowed
    screenshot(page, "agent-viewer")
    forced = page.evaluate(
        """async (id) => (await fetch(`/v1/agents/${id}`, {method: 'PUT', headers: {
            authorization: `Bearer ${sessionStorage.getItem('parley.key')}`, 'content-type': 'application/json'},
            body: JSON.stringify({name: 'Read Only', system_prompt: 'changed'})})).status""",
        agent["id"],
    )
    assert forced == 403
    assert agent_now(service, key, agent["id"])["version"] == 2
    no_page_errors(page)


def test_signing_out_forgets_the_key(console: Console, service: Service, key: str) -> None:
    page = console(service, key)
    page.get_by_test_id("signout").click()
    page.wait_for_url(re.compile(r"#/signin"))
    stored = page.evaluate("() => [sessionStorage.length, localStorage.length]")
    assert stored == [0, 0]
    page.reload()
    expect(page.get_by_test_id("signin-form")).to_be_visible()
    page.evaluate("() => { location.hash = '#/agents' }")
    page.wait_for_url(re.compile(r"#/signin"))  # no key, no console
    page.get_by_test_id("signin-key").fill("pk_not-a-key")
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signin-error")).to_contain_text("not accepted")
    assert page.evaluate("() => sessionStorage.length") == 0
    screenshot(page, "signin")
    no_page_errors(page)


def test_keys_are_created_with_the_secret_shown_once_and_revoked(console: Console, service: Service, key: str) -> None:
    page = console(service, key, route="#/keys")
    page.get_by_test_id("key-name").fill("ci-editor")
    page.get_by_test_id("key-role").select_option("editor")
    page.get_by_text("Limit to some scopes").click()
    page.get_by_test_id("key-scope-agents:read").check()
    page.get_by_test_id("key-scope-calls:read").check()
    page.get_by_test_id("key-create").click()
    secret = page.get_by_test_id("key-secret").inner_text()
    register_secret(secret)
    assert secret.startswith("pk_")
    screenshot(page, "keys-created")
    with service.client(secret) as c:
        me = c.get("/v1/me").json()
        assert (me["role"], sorted(me["scopes"])) == ("editor", ["agents:read", "calls:read"])
    page.get_by_test_id("key-dismiss").click()
    expect(page.get_by_test_id("key-secret")).to_have_count(0)  # shown once: gone from the page
    assert secret not in page.content()
    row = page.get_by_test_id("keys-row").filter(has_text="ci-editor")
    row.get_by_test_id("key-revoke").click()
    row.get_by_test_id("key-revoke").click()
    expect(row).to_contain_text("revoked")
    with service.client(secret) as c:
        assert c.get("/v1/me").status_code == 401
    screenshot(page, "keys")
    no_page_errors(page)


def test_numbers_are_mapped_to_agents_and_removed(
    console: Console, service: Service, key: str, tenant_name: str
) -> None:
    agent = make_agent(service, key, "Front Desk")
    service.assign_number("+15550102030", tenant_name)
    page = console(service, key, route="#/numbers")
    page.get_by_test_id("number-input").fill("+15550102030")
    page.get_by_test_id("number-agent").select_option(agent["id"])
    page.get_by_test_id("number-add").click()
    row = page.get_by_test_id("numbers-row").filter(has_text="+15550102030")
    expect(row).to_contain_text("Front Desk")
    with service.client(key) as c:
        assert [n["agent_id"] for n in c.get("/v1/numbers").json()] == [agent["id"]]
    screenshot(page, "numbers")
    page.get_by_test_id("number-input").fill("+15559999999")  # not assigned to this tenant by the operator
    page.get_by_test_id("number-add").click()
    expect(page.get_by_test_id("error")).to_be_visible()
    row.get_by_test_id("number-delete").click()
    row.get_by_test_id("number-delete").click()
    expect(page.get_by_test_id("numbers-empty")).to_be_visible()
    no_page_errors(page)


def test_analytics_draws_its_charts(console: Console, service: Service, key: str) -> None:
    page = console(service, key, route="#/analytics")
    expect(page.get_by_test_id("total-calls")).to_contain_text("0")
    expect(page.get_by_test_id("chart-calls").locator("canvas")).to_have_count(1)
    expect(page.get_by_test_id("chart-v2v").locator("canvas")).to_have_count(1)
    page.get_by_role("button", name="7 days").click()
    expect(page.get_by_test_id("end-reasons")).to_contain_text("No calls")
    screenshot(page, "analytics")
    no_page_errors(page)


PHONE_VIEWS = {"agents": "#/agents", "agent": "#/agents/{agent}", "keys": "#/keys", "numbers": "#/numbers",
               "analytics": "#/analytics"}  # fmt: skip


def test_views_fit_a_phone(console: Console, service: Service, key: str, agent: dict[str, Any]) -> None:
    page = console(service, key)
    page.set_viewport_size(PHONE)
    for name, route in PHONE_VIEWS.items():
        page.evaluate("(r) => { location.hash = r }", route.format(agent=agent["id"]))
        expect(page.get_by_test_id(f"{name}-view")).to_be_visible()
        page.wait_for_load_state("networkidle")
        expect(page.locator("main .loading")).to_have_count(0)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{route} scrolls sideways by {overflow}px at phone width"
        screenshot(page, f"phone-{name}")
    page.get_by_test_id("nav-toggle").click()  # the menu folds away on a phone
    expect(page.get_by_test_id("nav-calls")).to_be_visible()
    no_page_errors(page)


def test_the_keyboard_reaches_everything(console: Console, service: Service, key: str, agent: dict[str, Any]) -> None:
    """Sign in with Enter, open an agent from the list with Enter, and leave the YAML editor with Esc, Tab."""
    page = console(service, key)
    page.get_by_test_id("signout").click()
    expect(page.get_by_test_id("signin-key")).to_be_focused()  # the key field has the focus on arrival
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    row = page.get_by_test_id("agents-row").filter(has_text=agent["name"])
    row.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"#/agents/{agent['id']}$"))
    page.get_by_test_id("tab-yaml").click()
    editor = page.get_by_test_id("yaml-editor")
    expect(editor).to_have_value(re.compile("^name:"))
    editor.focus()
    page.keyboard.press("Control+Home")
    page.keyboard.press("Tab")  # indents: two spaces, the focus stays
    expect(editor).to_have_value(re.compile("^  name:"))
    expect(editor).to_be_focused()
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    expect(editor).not_to_be_focused()
    no_page_errors(page)

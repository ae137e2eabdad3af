"""A real browser for the console's tests: Playwright (sync API) driving Debian's Chromium against `parley serve`.

Playwright's own browser download does not work here, so the tests launch ``/usr/bin/chromium``, which
scripts/install-test-deps.sh installs (as root). Without it the tests skip, saying so.

Why the fixtures are **module**-scoped, not session-scoped: Playwright's sync API marks its own event loop as the
thread's running loop between calls, so while it is started every ``asyncio.run()`` and every pytest-asyncio test
in the same thread fails ("cannot be called from a running event loop"). Started per module and stopped when the
module ends, it leaves the rest of the suite alone. Inside a browser module, run coroutines with :func:`run_async`
(a thread of their own) and write no ``async def`` tests.

Use in a test module::

    from tests.support.browser import browser, browsers, console, playwright, run_async, screenshot

    def test_x(console, service, key):
        page = console(service, key)          # signed in at the service's `/`
        page.get_by_test_id("nav-agents").click()
        screenshot(page, "agents")            # .parley/screenshots/agents.png

Chromium's fake microphone plays a WAV: ``page = console(service, key, browser=browsers(audio=wav))``.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from .service import ROOT, Service

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / ".parley" / "screenshots"
SIGNIN_TIMEOUT_MS = 15_000
T = TypeVar("T")


def chromium_or_skip() -> Path:
    """Debian's Chromium, or a skip that says how to get it (only when it cannot be installed here)."""
    if not CHROMIUM.exists():
        found = shutil.which("chromium")
        if found:
            return Path(found)
        pytest.skip("Chromium is missing: run scripts/install-test-deps.sh as root (apt-get install chromium)")
    return CHROMIUM


def chromium_args(audio: Path | None = None, fake_ui: bool = True) -> list[str]:
    """Flags for a headless Chromium in a container, with fake media devices.

    ``fake_ui`` auto-accepts the microphone prompt (without it, and without a context permission, getUserMedia
    is refused: the refused-microphone tests). ``audio`` is the WAV the fake microphone plays, once
    (``%noloop``: then silence), from the moment a page opens the microphone.
    """
    args = [
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-dev-shm-usage",
        "--no-first-run",
    ]
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")
    if audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={Path(audio).resolve()}%noloop")
    return args


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` in a thread of its own: this thread's loop belongs to Playwright (see the module doc)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=main, name="run_async")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright for one module (started after :func:`chromium_or_skip`, stopped when the module ends)."""
    chromium_or_skip()
    with sync_playwright() as p:
        yield p


class Browsers(Protocol):
    def __call__(self, audio: Path | None = None, fake_ui: bool = True) -> Browser: ...


@pytest.fixture(scope="module")
def browsers(playwright: Playwright) -> Iterator[Browsers]:
    """A factory of Chromiums: the fake microphone's file and the auto-accepted prompt are flags of the launch."""
    launched: list[Browser] = []
    executable = chromium_or_skip()

    def launch(audio: Path | None = None, fake_ui: bool = True) -> Browser:
        b = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=chromium_args(audio, fake_ui)
        )
        launched.append(b)
        return b

    yield launch
    for b in launched:
        b.close()


@pytest.fixture(scope="module")
def browser(browsers: Browsers) -> Browser:
    """One headless Chromium for the module: fake microphone (a beep), microphone prompt auto-accepted."""
    return browsers()


def new_context(
    browser: Browser, service: Service, permissions: Sequence[str] | None = ("microphone",)
) -> BrowserContext:
    """A fresh profile (its own sessionStorage) on ``service``; ``permissions=None`` grants nothing."""
    context = browser.new_context(base_url=service.url, viewport={"width": 1280, "height": 860})
    if permissions:
        context.grant_permissions(list(permissions), origin=service.url)
    return context


def sign_in(page: Page, service: Service, key: str) -> Page:
    """Open the service's `/` and sign in through the form (data-testid signin-key / signin-submit)."""
    page.goto(f"{service.url}/")
    page.get_by_test_id("signin-key").fill(key)
    page.get_by_test_id("signin-submit").click()
    page.wait_for_function(
        "() => !location.hash.startsWith('#/signin') && sessionStorage.getItem('parley.key') !== null",
        timeout=SIGNIN_TIMEOUT_MS,
    )
    return page


class Console(Protocol):
    def __call__(
        self,
        service: Service,
        key: str,
        *,
        browser: Browser | None = None,
        permissions: Sequence[str] | None = ("microphone",),
        route: str | None = None,
    ) -> Page: ...


@pytest.fixture(scope="module")
def console(browser: Browser) -> Iterator[Console]:
    """``console(service, key)`` → a Page signed in at the service's `/` (a fresh context each time).

    ``browser=`` another launch (e.g. ``browsers(audio=wav)``); ``route="#/talk/x"`` goes there after signing in;
    ``permissions=None`` grants no microphone. Console errors and page errors are kept on ``page.parley_errors``.
    """
    contexts: list[BrowserContext] = []

    def open_console(
        service: Service,
        key: str,
        *,
        browser: Browser | None = None,
        permissions: Sequence[str] | None = ("microphone",),
        route: str | None = None,
    ) -> Page:
        context = new_context(browser or default, service, permissions)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: errors.append(f"{msg.type}: {msg.text}") if msg.type == "error" else None)
        page.parley_errors = errors  # type: ignore[attr-defined]
        sign_in(page, service, key)
        if route:
            page.evaluate("(r) => { location.hash = r }", route)
        return page

    default = browser
    yield open_console
    for context in contexts:
        try:
            context.close()
        except Exception:  # its browser may be closed already
            pass


def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    """Save ``.parley/screenshots/<name>.png`` (ignored by git) for a person to look at after the run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_for(page: Page, expression: str, timeout_s: float = 30.0, arg: Any = None) -> Any:
    """The truthy value of the JavaScript ``expression`` (a function source) once it is, or a clear timeout."""
    handle = page.wait_for_function(expression, arg=arg, timeout=timeout_s * 1000)
    return handle.json_value()


__all__ = [
    "Browsers",
    "Console",
    "browser",
    "browsers",
    "chromium_args",
    "chromium_or_skip",
    "console",
    "new_context",
    "playwright",
    "run_async",
    "screenshot",
    "sign_in",
    "wait_for",
]

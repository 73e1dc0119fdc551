"""Browser tests: Playwright drives headless Chromium through the example project on pytest-django's
live server, with the sandbox (tests/e2e/conftest.py) standing in for Apicbase, Custobar and
TeleTracker.

The browser is the system's Chromium (Debian's ``chromium`` package, or ``CHROMIUM_PATH``),
started through Playwright's ``executable_path``: ``playwright install`` (a download) is never
needed. Without Chromium or the ``playwright`` package the tests are skipped, with the reason.

Screenshots go to a temporary directory, or to ``OAUTH_CONNECT_SCREENSHOTS`` when set (relative
paths are taken from the repository root), e.g. ``OAUTH_CONNECT_SCREENSHOTS=docs/images`` to
refresh the README's pictures.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth import get_user_model

from tests.e2e import conftest as e2e
from tests.e2e.conftest import PASSWORD, Sandbox

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

# The end-to-end tests' sandbox on the live server (OAuth clients registered, providers pointed
# at it): a fixture is found in the conftest that names it.
sandbox = e2e.sandbox

DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1100, "height": 800}
# The machine may be offline: without these Chromium keeps trying to reach Google's services
# (component updates, sync, QUIC probes) and floods the log with refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous for a 2-core CI machine running the live server, Chromium and the test at once;
# expect() retries until then, so a passing test is not slowed down.
TIMEOUT_MS = 15_000


def find_chromium() -> tuple[str | None, str]:
    """The Chromium executable to use, or None and why not."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured, ""
        return None, (
            f"needs Chromium: CHROMIUM_PATH={configured} is not an executable file; "
            "apt-get install chromium (or point CHROMIUM_PATH at a Chromium binary)"
        )
    for candidate in (DEFAULT_CHROMIUM, shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate, ""
    return None, "needs Chromium: apt-get install chromium (or set CHROMIUM_PATH)"


@pytest.fixture(scope="session", autouse=True)
def chromium_executable() -> str:
    """Chromium's path; skips the test, saying what to install, if it or Playwright is missing.
    (autouse: skip before the test database is even created.)"""
    if importlib.util.find_spec("playwright") is None:
        pytest.skip(
            'needs the playwright package: pip install -e ".[test]" '
            "(the browser comes from apt-get install chromium; never `playwright install`)"
        )
    path, reason = find_chromium()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def chromium(chromium_executable: str) -> Iterator[Browser]:
    """Headless Chromium, one per test module (a fresh context per test keeps tests apart)."""
    from playwright.sync_api import expect, sync_playwright

    # Playwright's sync API runs an asyncio event loop in this thread for as long as it is
    # started, so Django sees a "running event loop" and refuses ORM calls from this thread
    # (SynchronousOnlyOperation): the tests' own database work, pytest-django's flush between
    # tests. The loop only ever runs while a Playwright call is waiting, never concurrently with
    # the ORM, so the check is switched off, and only while the browser is up.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    expect.set_options(timeout=TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    # Lets the page fixture know whether the test failed, to keep a screenshot of it.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def viewport() -> dict[str, int]:
    """The window size; fixed, so screenshots come out the same. Override it in a module."""
    return dict(VIEWPORT)


@pytest.fixture
def context(
    chromium: Browser, live_server: Any, viewport: dict[str, int]
) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test, addressing the live server."""
    context = chromium.new_context(viewport=viewport, base_url=live_server.url)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A page that fails the test on any server error (5xx) it receives."""
    page = context.new_page()
    server_errors: list[str] = []
    page.on(
        "response",
        lambda response: (
            server_errors.append(f"{response.status} {response.request.method} {response.url}")
            if response.status >= 500
            else None
        ),
    )
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"Screenshot of the page at the failure: {shot}")
    assert not server_errors, f"the server answered with errors: {server_errors}"


@pytest.fixture(scope="session")
def screenshot_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    configured = os.environ.get("OAUTH_CONNECT_SCREENSHOTS")
    if not configured:
        return tmp_path_factory.mktemp("screenshots")
    directory = Path(configured)
    if not directory.is_absolute():
        directory = request.config.rootpath / directory
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def screenshot(screenshot_dir: Path) -> Callable[[Page, str], Path]:
    """``screenshot(page, "name")``: the whole page, as ``name.png`` in the screenshot dir."""

    def take(page: Page, name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
        return path

    return take


@pytest.fixture
def site(sandbox: Sandbox, settings: Any) -> Sandbox:
    """The sandbox on the live server (tests/e2e/conftest.py), with the example project's own
    base template for our pages, as runserver has them (the e2e settings leave it out)."""
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "BASE_TEMPLATE": "example_base.html"}
    # The fake TeleTracker's token lifetime, whatever the environment says: an hour, like the
    # sandbox's Apicbase tokens here (tests/e2e/conftest.py's TOKEN_LIFETIME).
    settings.SANDBOX_TELETRACKER_TOKEN_SECONDS = e2e.TOKEN_LIFETIME
    return sandbox


def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    """Log in through the example project's login form, as a person would."""
    from playwright.sync_api import expect

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/connections/$"))


@pytest.fixture
def operator(db: None) -> Any:
    """A superuser, for the admin; belongs to no organisation."""
    return get_user_model().objects.create_superuser("operator", password=PASSWORD)

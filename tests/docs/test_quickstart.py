"""docs/quickstart.md, followed literally, from an empty directory.

Every command of the page runs in bash, in the terminal the page says, in page order. They build
a wheel from this checkout, install it into a fresh virtual environment (its dependencies come
from the package index), run ``startproject`` and every step after it, and start both servers:
the reader's project and the sandbox. Then a real browser (Chromium) logs in, connects, consents
at the sandbox, and opens the page's API view. Each file the page shows is written as shown, and
each output it shows is compared with what the command printed.

The only departures from the page, each forced by running inside a test:

- ``~/src/oauth_connect`` is this checkout.
- The servers listen on free ports, not 8000 and 8001. The page's URLs, ``runserver`` and
  ``sandbox`` are given those ports.
- The second terminal doesn't make ``.venv`` in the checkout: the interpreter running this test
  already has ``.[example]`` installed. The sandbox keeps its data in a temporary SQLite file,
  not the checkout's ``db.sqlite3``.

This test is skipped when Chromium or Playwright is missing, or when pip can't reach the package
index; CI sets OAUTH_CONNECT_REQUIRE_LITERAL=1, which makes those failures. Without them the page
is still checked as far as it can be offline (its Python compiles, its commands are the ones
this test knows).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from oauth_connect.providers.apicbase import ApicbaseProvider
from tests.browser.conftest import CHROMIUM_ARGS, TIMEOUT_MS, find_chromium
from tests.docs.harness import DOCS, ROOT, Block, _cron_command, blocks
from tests.docs.literal import (
    Terminal,
    cannot_follow,
    free_port,
    readers_environment,
    terminals,
)

PAGE = "quickstart.md"
SOURCE = "~/src/oauth_connect"
SECOND_TERMINAL = "# a second terminal"
# The reader's own login (step 7) and the sandbox's (step 5).
ALICE = ("alice", "alice-password")
DEMO = ("demo", "demo")
FILE_HEADER = re.compile(r"# (?P<path>[\w/.]+\.py)(?P<how>: .*)?$")
# How every command of the page starts (the literal test runs each in bash).
KNOWN_COMMANDS = (
    "export ",
    "mkdir ",
    "cd ",
    "python ",
    "python3 ",
    "pip ",
    "django-admin ",
    ".venv/bin/python ",
    "DJANGO_SUPERUSER_PASSWORD=",
)
PASTED_BLOCK = re.compile(r"^# The sandbox at .*?^}\n", re.M | re.S)


@pytest.fixture
def chromium_path() -> str:
    try:
        import playwright  # noqa: F401
    except ImportError:
        cannot_follow('needs the playwright package: pip install -e ".[test]"')
    path, reason = find_chromium()
    if path is None:
        cannot_follow(reason)
    return path


@pytest.fixture
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        context = chromium.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()
        chromium.close()


class Reader:
    """Does what the page says, block by block, in two terminals."""

    def __init__(self, tmp_path: Path, browser: Any) -> None:
        self.site_port, self.sandbox_port = free_port(), free_port()
        assert self.site_port != self.sandbox_port
        self.site = f"http://127.0.0.1:{self.site_port}"
        self.browser = browser
        workspace = tmp_path / "work"
        workspace.mkdir()
        environment = readers_environment()
        self.first = Terminal("1", workspace, environment, tmp_path)
        # The sandbox's database: a file of its own, not the checkout's db.sqlite3.
        sandbox_db = f"sqlite:///{tmp_path / 'sandbox.sqlite3'}"
        self.second = Terminal(
            "2", workspace, {**environment, "DATABASE_URL": sandbox_db}, tmp_path
        )
        self.last_output = ""
        self.sandbox_settings = ""
        self.text = (DOCS / PAGE).read_text()

    def localised(self, code: str) -> str:
        """The page's code with this checkout for ~/src/oauth_connect and this test's ports."""
        code = code.replace(SOURCE, str(ROOT))
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{self.site_port}")
        return code.replace("127.0.0.1:8001", f"127.0.0.1:{self.sandbox_port}")

    # Blocks ------------------------------------------------------------------------------------

    def follow(self, block: Block) -> None:
        handler = getattr(self, f"block_{block.language}")
        handler(block)

    def block_sh(self, block: Block) -> None:
        terminal = self.second if block.code.startswith(SECOND_TERMINAL) else self.first
        for line in shell_lines(block.code):
            self.sh_line(terminal, self.localised(line))

    def sh_line(self, terminal: Terminal, line: str) -> None:
        if terminal is self.second and "-m venv .venv" in line:
            # The interpreter running this test is that virtual environment.
            assert line == 'python3 -m venv .venv && .venv/bin/pip install -e ".[example]"', line
            return
        if line.startswith(".venv/bin/python manage.py sandbox "):
            command = line.replace(".venv/bin/python", shlex.quote(sys.executable), 1)
            log = terminal.start(
                f"{command} --addrport 127.0.0.1:{self.sandbox_port}",
                self.sandbox_port,
                ready_when="The sandbox's own login",
            )
            self.last_output = log.read_text()
            return
        if line == "python manage.py runserver":
            terminal.start(f"{line} 127.0.0.1:{self.site_port}", self.site_port)
            # The reader's project, not whatever else might have taken the port: it sends an
            # anonymous visitor of the Connections page to the login page of step 3.
            answer = requests.get(f"{self.site}/connections/", allow_redirects=False, timeout=10)
            assert answer.headers.get("Location", "").startswith("/admin/login/"), answer
            self.connect_in_the_browser()
            return
        self.last_output = terminal.run(line)

    def block_python(self, block: Block) -> None:
        header = FILE_HEADER.match(block.code.splitlines()[0])
        assert header, f"{block}: a Python sample on this page says which file it is"
        path, how = header["path"], (header["how"] or "").removeprefix(": ")
        target = self.first.cwd / path
        if how == "add at the end":
            with target.open("a") as file:
                file.write("\n" + block.code)
        elif how == "instead of the sandbox's block":
            self.going_live(block)
        else:
            assert how == "", f"{block}: unknown instruction {how!r}"
            target.write_text(block.code)

    def block_text(self, block: Block) -> None:
        """Output the page shows: the last command's, give or take what differs by design."""
        shown = block.code.strip()
        if shown.startswith("Paste this"):
            printed = self.last_output
            assert "Paste this at the end of your project's settings.py:" in printed
            [pasted] = PASTED_BLOCK.findall(printed)
            # What the page shows is what the sandbox prints, but the client's id and secret.
            assert without_client(self.localised(shown)) in without_client(printed)
            # ... and the reader pastes it (step 5).
            with (self.first.cwd / "mysite" / "settings.py").open("a") as file:
                file.write("\n" + pasted)
            self.sandbox_settings = pasted
        else:
            assert self.last_output.strip() == shown, (self.last_output, shown)

    def block_django(self, block: Block) -> None:
        rendered = self.first.python(
            "from django.template import Template, Context; "
            f"print(Template({block.code.strip()!r}).render(Context()))"
        )
        assert rendered.strip() == '<a href="/connections/">Connections</a>'

    def block_json(self, block: Block) -> None:
        # Step 9: the page's view, in the browser, as Alice.
        self.browser.goto(f"{self.site}/recipes/")
        assert json.loads(self.browser.inner_text("body")) == json.loads(block.code)

    def block_cron(self, block: Block) -> None:
        command = _cron_command(block.code.strip())
        assert command.startswith(".venv/bin/python manage.py "), command
        output = self.first.run(command)
        assert output.strip() == "0 due, 0 refreshed, 0 skipped, 0 failed"

    # What the prose asks -----------------------------------------------------------------------

    def connect_in_the_browser(self) -> None:
        """Step 8's list, in Chromium: each quoted text is checked on the page and in the
        browser."""
        from playwright.sync_api import expect

        for quoted in (
            '"Not connected."',
            "**Connect Apicbase**",
            "**Continue to Apicbase**",
            "**Authorize**",
            '"Apicbase is connected."',
        ):
            assert quoted in self.text, quoted
        page = self.browser
        page.goto(f"{self.site}/connections/")
        # LOGIN_URL: the admin's login page, which sends Alice back here.
        page.fill("input[name=username]", ALICE[0])
        page.fill("input[name=password]", ALICE[1])
        page.click("input[type=submit]")
        expect(page).to_have_url(f"{self.site}/connections/")
        expect(page.get_by_text("Not connected.")).to_be_visible()
        page.get_by_role("link", name="Connect Apicbase").click()
        for scope in ("accounts", "library"):
            expect(page.get_by_role("listitem").filter(has_text=scope).first).to_be_visible()
        page.get_by_role("button", name="Continue to Apicbase").click()
        # At the sandbox, on the other port: its own login, then its consent screen.
        expect(page).to_have_url(re.compile(rf"^http://127\.0\.0\.1:{self.sandbox_port}/"))
        page.fill("input[name=username]", DEMO[0])
        page.fill("input[name=password]", DEMO[1])
        page.click("[type=submit]")
        page.get_by_role("button", name="Authorize", exact=True).click()
        expect(page).to_have_url(f"{self.site}/connections/")
        expect(page.get_by_text("Apicbase is connected.")).to_be_visible()

    def going_live(self, block: Block) -> None:
        """Not run against Apicbase (no test calls a vendor): the block replaces the pasted
        one with the environment's credentials, and Apicbase's URLs are the defaults."""
        namespace: dict[str, Any] = {"os": os, "OAUTH_CONNECT": {"PROVIDERS": {}}}
        exec(self.sandbox_settings, namespace)  # noqa: S102 - what the sandbox printed
        os.environ["APICBASE_CLIENT_ID"] = "live-id"
        os.environ["APICBASE_CLIENT_SECRET"] = "live-secret"
        try:
            exec(block.code, namespace)  # noqa: S102 - the page's own sample
        finally:
            del os.environ["APICBASE_CLIENT_ID"], os.environ["APICBASE_CLIENT_SECRET"]
        assert namespace["OAUTH_CONNECT"]["PROVIDERS"]["apicbase"] == {
            "CLIENT_ID": "live-id",
            "CLIENT_SECRET": "live-secret",
        }
        for url in ("AUTHORIZE_URL", "TOKEN_URL", "API_URL"):
            assert ApicbaseProvider.default_settings[url].startswith("https://"), url


def shell_lines(code: str) -> list[str]:
    return [line.strip() for line in code.splitlines() if line.strip() and line[0] != "#"]


def without_client(text: str) -> str:
    text = re.sub(r'"CLIENT_ID": "[^"]*"', '"CLIENT_ID": ...', text)
    return re.sub(r'"CLIENT_SECRET": "[^"]*"', '"CLIENT_SECRET": ...', text)


def test_the_quickstart_followed_literally_ends_in_an_api_call(
    tmp_path: Path, browser: Any
) -> None:
    reader = Reader(tmp_path, browser)
    with terminals(reader.first, reader.second):
        for block in blocks(PAGE):
            try:
                reader.follow(block)
            except AssertionError as err:
                raise AssertionError(f"{block}: {err}") from err

        # The token the sandbox issued is stored encrypted, with the key step 4 made.
        stored = reader.first.python(
            "from django.db import connection; c = connection.cursor(); "
            "c.execute('SELECT access_token, status FROM oauth_connect_connection'); "
            "print(c.fetchall())"
        )
        assert "'gAAAA" in stored and "'active'" in stored, stored
    # Every block was followed: none was skipped by a handler that doesn't exist.
    assert {b.language for b in blocks(PAGE)} <= {"sh", "python", "text", "django", "json", "cron"}


def test_offline_the_quickstart_python_compiles_and_its_commands_are_known() -> None:
    """What can be checked without the network: every file the page shows is valid Python,
    and every command is one the literal test above knows how to follow."""
    for block in blocks(PAGE):
        if block.language == "python":
            assert FILE_HEADER.match(block.code.splitlines()[0]), block
            compile(block.code, str(block), "exec")
        if block.language == "sh":
            for line in shell_lines(block.code):
                assert line.startswith(KNOWN_COMMANDS), line

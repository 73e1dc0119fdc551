"""The example project under uvicorn, in a process of its own, as a test starts it: on a socket
the test bound (so there is no port to race for), on the test run's database."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import requests
from django.db import connection as db_connection

from oauth_connect import conf

from .processes import REPO, database_url

#: How long uvicorn may take to start, and any request to answer.
WAIT = 60.0


@dataclass
class AsgiSite:
    url: str
    process: subprocess.Popen[str]

    def get_all(self, browser: requests.Session, paths: list[str]) -> list[tuple[int, Any]]:
        """GET every path at once, as ``browser`` (its cookies); each answer's status and its
        JSON (its headers, for an answer other than 200)."""
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())

        async def one(client: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
            async with client.get(self.url + path, allow_redirects=False) as response:
                body = await response.json() if response.status == 200 else response.headers
                return response.status, body

        async def every() -> list[tuple[int, Any]]:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"Cookie": cookie},
                timeout=aiohttp.ClientTimeout(total=WAIT),
            ) as client:
                return list(await asyncio.gather(*(one(client, path) for path in paths)))

        return asyncio.run(every())


def subprocess_database_url() -> str:
    """DATABASE_URL for this test run's database, as another process must spell it."""
    if db_connection.vendor == "postgresql":
        return database_url()
    return f"sqlite:///{db_connection.settings_dict['NAME']}"


@contextmanager
def uvicorn_serving(arguments: list[str], **environment: str) -> Iterator[AsgiSite]:
    """``uvicorn ARGUMENTS`` with the example project's settings on the test database, the
    test's encryption keys and ``environment``; stopped at the end of the block, which fails
    if uvicorn printed a traceback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DATABASE_URL": subprocess_database_url(),
        "OAUTH_CONNECT_KEYS": ",".join(conf.encryption_keys()),
        "LOG_LEVEL": "WARNING",
        **environment,
    }
    command = [sys.executable, "-m", "uvicorn", *arguments, "--fd", str(listener.fileno())]
    process = subprocess.Popen(
        [*command, "--log-level", "warning", "--no-access-log"],
        cwd=REPO,
        env=env,
        pass_fds=[listener.fileno()],
        stderr=subprocess.PIPE,
        text=True,
    )
    site = AsgiSite(f"http://127.0.0.1:{listener.getsockname()[1]}", process)
    try:
        _wait_until_serving(site)
        yield site
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        listener.close()
    assert "Traceback" not in stderr, stderr


def _wait_until_serving(site: AsgiSite) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            requests.get(site.url + "/accounts/login/", timeout=WAIT).raise_for_status()
            return
        except requests.ConnectionError:
            if site.process.poll() is not None:
                raise AssertionError(f"uvicorn exited: {site.process.communicate()[1]}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # a process starting: there is no clock to move

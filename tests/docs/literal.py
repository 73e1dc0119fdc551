"""Following a docs page literally, as a reader at a shell would: commands run in bash, in a
terminal whose working directory and environment carry over from one command to the next, and
servers are started in the background.

The harness (harness.py) runs samples inside the test process. This module is for a page, such
as the quickstart, that promises a reader can follow it from an empty directory on their own
machine: nothing of the test process leaks into the terminal (not its virtual environment, not
its settings module, not its coverage hooks).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

BASH = shutil.which("bash") or "/bin/bash"
# What a reader's shell would have; nothing that points at this test run.
KEPT_VARIABLES = {
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TERM",
    "TMPDIR",
    "SSL_CERT_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
}
KEPT_PREFIXES = ("PIP_", "PYENV")
# What pip says when it can't reach the package index (then the test is skipped, not failed).
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Failed to establish a new connection",
    "ProxyError",
)


# Set by CI (.ci/run), where the package index and Chromium must be there: a missing one fails
# the test instead of skipping it, so a green CI means the page was followed.
REQUIRED = "OAUTH_CONNECT_REQUIRE_LITERAL"


def cannot_follow(reason: str) -> NoReturn:
    """Skip, saying why; fail instead where CI requires the page to be followed."""
    if os.environ.get(REQUIRED) == "1":
        pytest.fail(f"{reason} ({REQUIRED}=1: this must run here)")
    pytest.skip(reason)


def readers_environment() -> dict[str, str]:
    """The test process's environment, less everything that is about this test run: the
    virtual environment's bin directory leaves PATH, and DJANGO_SETTINGS_MODULE, PYTHONPATH and
    coverage's variables are not there."""
    own_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(
        part for part in os.environ.get("PATH", "").split(os.pathsep) if part != own_bin
    )
    kept = {
        name: value
        for name, value in os.environ.items()
        if name in KEPT_VARIABLES or name.startswith(KEPT_PREFIXES)
    }
    return {**kept, "PATH": path or "/usr/local/bin:/usr/bin:/bin"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Terminal:
    """A shell session: ``run`` a line and get its output; ``cd``, ``export`` and ``source``
    carry over to the next line, as in a terminal."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.name = name
        self.cwd = cwd
        self.env = env
        self._state = scratch / f"terminal-{name}"
        self._state.mkdir(parents=True, exist_ok=True)
        self._servers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(self, line: str, timeout: float = 900) -> str:
        """Run ``line`` in bash; its output (standard output and error, interleaved). A line
        that fails fails the test, with what it printed; pip failing to reach the package
        index skips it."""
        script = (
            'cd "$LITERAL_CWD" || exit 99\n'
            f"{line}\n"
            "status=$?\n"
            'pwd > "$LITERAL_STATE/cwd"; env -0 > "$LITERAL_STATE/env"\n'
            "exit $status\n"
        )
        finished = subprocess.run(  # noqa: S603 - bash, running the page's own line
            [BASH, "-c", script],
            env={**self.env, "LITERAL_CWD": str(self.cwd), "LITERAL_STATE": str(self._state)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        output = finished.stdout
        if finished.returncode:
            if line.lstrip().startswith("pip ") and any(s in output for s in OFFLINE_SIGNS):
                cannot_follow(f"needs the package index, which pip can't reach: {line}")
            raise AssertionError(
                f"terminal {self.name}, in {self.cwd}: `{line}` exited with "
                f"{finished.returncode}:\n{output[-4000:]}"
            )
        self.cwd = Path((self._state / "cwd").read_text().strip())
        variables = (self._state / "env").read_bytes().split(b"\0")
        self.env = {
            name: value
            for name, _, value in (item.decode().partition("=") for item in variables if item)
            if not name.startswith("LITERAL_") and name not in ("PWD", "OLDPWD", "SHLVL", "_")
        }
        return output

    def start(self, line: str, port: int, ready_when: str = "", timeout: float = 120) -> Path:
        """Start ``line`` (a server) in the background and wait until it accepts connections
        on ``port`` and has printed ``ready_when``; the file its output goes to."""
        log = self._state / f"server-{port}.log"
        with log.open("wb") as out:
            server = subprocess.Popen(  # noqa: S603 - bash, running the page's own line
                [BASH, "-c", f'cd "$LITERAL_CWD" && exec {line}'],
                env={**self.env, "LITERAL_CWD": str(self.cwd)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped whole
            )
        self._servers.append((server, log))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise AssertionError(
                    f"`{line}` exited with {server.returncode}:\n{log.read_text()}"
                )
            if ready_when in log.read_text() and _accepts(port):
                return log
            time.sleep(0.1)  # a real server starting in another process: nothing to freeze
        raise AssertionError(f"`{line}` did not start within {timeout} s:\n{log.read_text()}")

    def stop_servers(self) -> None:
        for server, _ in self._servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()

    def python(self, code: str) -> str:
        """``python manage.py shell -c CODE`` in this terminal: a look at the reader's project
        from inside, for the test's own checks."""
        return self.run(f"python manage.py shell --verbosity 0 -c {shlex.quote(code)}")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def terminals(*terminals: Terminal) -> Iterator[tuple[Terminal, ...]]:
    """The terminals, whose servers are stopped at the end, however the test ends."""
    try:
        yield terminals
    finally:
        for terminal in terminals:
            terminal.stop_servers()

"""Where the example project is served: ``SITE_URL`` if set, else what ``runserver`` (or
``sandbox --addrport``) was told on the command line.

The sandbox's provider settings are absolute URLs (the token endpoint is called server to
server), so they are built from this at start-up: ``runserver 9000`` or ``runserver
0.0.0.0:8080`` works without setting anything. Under another server (gunicorn, uvicorn), or
when people browse from another machine, set ``SITE_URL``.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

DEFAULT = "http://127.0.0.1:8000"
# Where `manage.py sandbox` serves by default: beside a project on runserver's 8000.
SANDBOX_ADDRPORT = "127.0.0.1:8001"
# Addresses that mean "every interface": a browser on this machine reaches them on loopback.
EVERY_INTERFACE = {"0", "0.0.0.0", "::", "[::]"}  # noqa: S104 - matched, not bound
# Options of Django's commands that take a value as the next word (``-v 2``), so that word
# isn't taken for runserver's address.
OPTIONS_WITH_VALUES = {"-v", "--verbosity", "--settings", "--pythonpath", "--addrport"}


def site_url(configured: str | None, argv: Sequence[str]) -> str:
    """``configured`` if given, else the URL the command in ``argv`` serves on."""
    if configured:
        return configured.rstrip("/")
    addrport = served_addrport(argv)
    return DEFAULT if addrport is None else url_for(addrport)


def url_for(addrport: str) -> str:
    """The URL a browser on this machine uses for a server listening on ``addrport`` (as
    ``runserver`` takes it: ``PORT`` or ``ADDRESS:PORT``)."""
    host, _, port = addrport.rpartition(":")
    if not port.isdigit():
        return DEFAULT
    if host in EVERY_INTERFACE or not host:
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def site_host(url: str) -> str:
    """The host of ``url`` as ``ALLOWED_HOSTS`` spells it (an IPv6 address in brackets)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def served_addrport(argv: Sequence[str]) -> str | None:
    """The address ``manage.py runserver [addrport]`` or ``manage.py sandbox [--addrport]`` in
    ``argv`` listens on; None for any other command (``migrate``, ``test``, pytest, a WSGI
    server)."""
    if len(argv) < 2 or argv[1] not in ("runserver", "sandbox"):
        return None
    command, words = argv[1], list(argv[2:])
    positional: list[str] = []
    n = 0
    while n < len(words):
        word = words[n]
        if word.startswith("--addrport="):
            return word.split("=", 1)[1]
        if word == "--addrport" and n + 1 < len(words):
            return words[n + 1]
        if word in OPTIONS_WITH_VALUES:
            n += 2
            continue
        if not word.startswith("-"):
            positional.append(word)
        n += 1
    if command == "sandbox":
        return SANDBOX_ADDRPORT
    return positional[0] if positional else None


def binds_every_interface(argv: Sequence[str]) -> bool:
    """Whether ``runserver`` was told to listen on every interface (then any Host is allowed)."""
    addrport = served_addrport(argv) or ""
    return addrport.rpartition(":")[0] in EVERY_INTERFACE

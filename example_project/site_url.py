"""Where the example project is served: ``SITE_URL`` if set, else what ``runserver`` was told.

The sandbox's provider settings are absolute URLs (the token endpoint is called server to
server), so they are built from this at start-up: ``runserver 9000`` or ``runserver
0.0.0.0:8080`` works without setting anything. Under another server (gunicorn, uvicorn), or
when people browse from another machine, set ``SITE_URL``.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT = "http://127.0.0.1:8000"
# Addresses that mean "every interface": a browser on this machine reaches them on loopback.
EVERY_INTERFACE = {"0", "0.0.0.0", "::", "[::]"}  # noqa: S104 - matched, not bound


def site_url(configured: str | None, argv: Sequence[str]) -> str:
    """``configured`` if given, else the URL ``runserver [addrport]`` in ``argv`` serves on."""
    if configured:
        return configured.rstrip("/")
    addrport = runserver_addrport(argv)
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


def runserver_addrport(argv: Sequence[str]) -> str | None:
    """The ``addrport`` argument of ``manage.py runserver`` (or ``sandbox --addrport``), if
    ``argv`` runs one."""
    arguments = list(argv[1:])
    if "runserver" in arguments:
        after = arguments[arguments.index("runserver") + 1 :]
        positional = [argument for argument in after if not argument.startswith("-")]
        return positional[0] if positional else None
    if "sandbox" in arguments:
        for n, argument in enumerate(arguments):
            if argument.startswith("--addrport="):
                return argument.split("=", 1)[1]
            if argument == "--addrport" and n + 1 < len(arguments):
                return arguments[n + 1]
        return SANDBOX_ADDRPORT
    return None


# Where `manage.py sandbox` serves by default: beside a project on runserver's 8000.
SANDBOX_ADDRPORT = "127.0.0.1:8001"


def binds_every_interface(argv: Sequence[str]) -> bool:
    """Whether ``runserver`` was told to listen on every interface (then any Host is allowed)."""
    addrport = runserver_addrport(argv) or ""
    return addrport.rpartition(":")[0] in EVERY_INTERFACE

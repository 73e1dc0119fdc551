"""docs/signals.md: the receiver sample gets the arguments the page lists for a real event at the
live sandbox, the LOGGING sample really formats oauth_connect's records, and the page's tables
list every signal and every log ``event`` the code has (derived from the source)."""

from __future__ import annotations

import ast
import json
import logging
import logging.config
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

import oauth_connect
from oauth_connect import signals
from oauth_connect.exceptions import ProviderError, ReauthorizationRequired, TokensNotStored
from oauth_connect.models import Connection, ConnectionEvent
from oauth_connect.services import (
    connect_with_credentials,
    disconnect,
    refresh_connection,
    rotate_token,
)
from oauth_connect.services.events import _LEVELS
from tests.docs.harness import DOCS, PageRun
from tests.e2e.conftest import PASSWORD, Sandbox

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = (DOCS / "signals.md").read_text()
PACKAGE = Path(oauth_connect.__file__).parent


def table(heading: str) -> list[list[str]]:
    """The rows of the first table after ``## heading``, as lists of cells (header skipped)."""
    section = PAGE.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def names(cell: str) -> set[str]:
    """The `code` names in a table cell."""
    return set(re.findall(r"`(\w+)`", cell))


def documented_signals() -> dict[str, set[str]]:
    """Signal name → the keyword arguments the page says it carries."""
    return {names(row[0]).pop(): names(row[2]) for row in table("Signals")}


def code_signals() -> set[str]:
    return {name for name, value in vars(signals).items() if isinstance(value, Signal)}


# Every signal and every log event is on the page -----------------------------------------------


def test_every_signal_is_in_the_page_table_and_every_event_kind_has_one() -> None:
    assert set(documented_signals()) == code_signals()
    assert set(signals.BY_EVENT_KIND) == set(ConnectionEvent.Kind.values)
    assert {f"connection_{kind}" for kind in signals.BY_EVENT_KIND} == code_signals()


CONNECTION_FIELDS = {"provider", "connection_id", "tenant_id"}
LEVEL_OF_METHOD = {"info": "INFO", "warning": "WARNING", "error": "ERROR", "exception": "ERROR"}


def logged_events() -> dict[str, tuple[set[str], str | None]]:
    """Every ``event`` a log call in oauth_connect/ uses → (its other ``extra`` fields, its level
    when the call says it statically), read from the source. A call whose event or fields can't
    be read this way fails here: extend this function, and the page's table."""
    found: dict[str, tuple[set[str], str | None]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "logger"
            ):
                continue
            extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
            assert extra is not None, f"{where}:{node.lineno} logs without extra="
            level = LEVEL_OF_METHOD.get(node.func.attr)
            for event, fields in _events_of(extra, where, node.lineno):
                found[event] = (fields, level)
    return found


def _events_of(extra: ast.expr, where: str, line: int) -> list[tuple[str, set[str]]]:
    if isinstance(extra, ast.Dict):
        keys = {key.value for key in extra.keys if isinstance(key, ast.Constant)}
        event = next(
            value.value
            for key, value in zip(extra.keys, extra.values, strict=True)
            if isinstance(key, ast.Constant) and key.value == "event"
        )
        return [(event, keys - {"event"})]
    assert isinstance(extra, ast.Call) and isinstance(extra.func, ast.Name), f"{where}:{line}"
    helper, event_arg = extra.func.id, extra.args[1]
    if helper == "connection_fields":
        fields = set(CONNECTION_FIELDS)
    elif helper == "provider_fields":
        fields = {"provider", *(keyword.arg for keyword in extra.keywords if keyword.arg)}
    else:
        raise AssertionError(f"{where}:{line}: extra= from {helper}(), which this test can't read")
    if isinstance(event_arg, ast.Constant):
        return [(event_arg.value, fields)]
    # The one computed event name: each connection event is logged under its kind.
    assert (where, ast.unparse(event_arg)) == ("services/events.py", "event.kind"), (
        f"{where}:{line}: an event name this test can't read"
    )
    return [(kind, fields) for kind in ConnectionEvent.Kind.values]


def test_every_log_call_goes_through_the_oauth_connect_logger() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name != "log.py":
            assert "getLogger(" not in path.read_text(), f"{path} makes its own logger"


def test_every_logged_event_is_in_the_page_table_with_its_fields_and_level() -> None:
    rows = {names(row[0]).pop(): row for row in table("Log events")}
    logged = logged_events()
    assert set(rows) == set(logged), "the page's table and the code's log calls differ"
    for event, (fields, level) in logged.items():
        row = rows[event]
        assert names(row[2]) == fields, f"{event}: fields"
        if level is not None:
            assert names(row[1]) == {level}, f"{event}: level"
    for kind in ConnectionEvent.Kind.values:
        level = logging.getLevelName(_LEVELS.get(kind, logging.INFO))
        assert names(rows[kind][1]) == {level}, f"{kind}: level"
    # The structured-fields table names every field that any record carries.
    every_field = set().union(*(fields for fields, _ in logged.values()))
    assert {names(row[0]).pop() for row in table("Logging")} == every_field | {"event"}


# The receiver sample, for a real refusal at the sandbox --------------------------------------


@pytest.fixture
def signals_page(run_docs_page: Callable[..., PageRun]) -> Iterator[PageRun]:
    run = run_docs_page("signals.md")
    from myapp.receivers import ask_tenant_to_reconnect  # the page's module

    yield run
    signals.connection_reauth_required.disconnect(ask_tenant_to_reconnect)


@pytest.fixture
def spy() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    """(signal name, sender, keyword arguments) of every oauth_connect signal sent."""
    sent: list[tuple[str, Any, dict[str, Any]]] = []
    receivers = []
    for name in code_signals():

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            sent.append((_name, sender, kwargs))

        getattr(signals, name).connect(receiver, weak=False)
        receivers.append((getattr(signals, name), receiver))
    yield sent
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def test_the_receiver_emails_the_members_once_the_refusal_commits(
    signals_page: PageRun,
    sandbox: Sandbox,
    browser: requests.Session,
    organisation: Any,
    user: Any,
    mailoutbox: list[Any],
    spy: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    user.email = "alice@example.com"
    user.save()
    sandbox.connect(browser, "apicbase")
    connection = Connection.objects.get(tenant=organisation)
    # The tenant revoked our access at the sandbox: the API answers 401, the refresh is refused.
    AccessToken.objects.filter(token=connection.access_token).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    RefreshToken.objects.get(token=connection.refresh_token).revoke()
    spy.clear()

    with transaction.atomic():
        with pytest.raises(ReauthorizationRequired) as caught:
            connection.session().get("accounts/me/")
        assert mailoutbox == [], "sent before the commit"
        assert spy == []

    [mail] = mailoutbox
    assert mail.subject == "Please reconnect Apicbase"
    assert mail.to == ["alice@example.com"]
    assert mail.body == (
        f"Since {timezone.now():%d %B %Y}, Apicbase no longer accepts our access to your "
        "account. Reconnect it on the Connections page."
    )
    # Exactly the arguments the page lists, and the real ones.
    [(name, sender, kwargs)] = spy
    assert name == "connection_reauth_required"
    assert sender is Connection
    assert (
        set(kwargs) - {"signal"} == documented_signals()[name] == {"connection", "event", "error"}
    )
    assert kwargs["connection"].pk == connection.pk
    assert kwargs["connection"].status == Connection.Status.REAUTH_REQUIRED
    assert kwargs["event"] == connection.events.get(kind="reauth_required")
    assert kwargs["error"] is caught.value
    assert kwargs["error"].error_code == "invalid_grant"
    assert kwargs["event"].message == kwargs["error"].detail


def test_every_signal_carries_the_arguments_the_page_lists(
    sandbox: Sandbox,
    browser: requests.Session,
    organisation: Any,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    spy: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    """Every kind of event, for real at the sandbox: its signal's arguments are the page's,
    and its log line's level and fields are the page's."""
    caplog.set_level(logging.INFO, logger="oauth_connect")
    sandbox.connect(browser, "apicbase")  # connected
    connection = Connection.objects.get(tenant=organisation)
    refresh_connection(connection, force=True)  # refreshed
    providers = settings.OAUTH_CONNECT["PROVIDERS"]
    broken = {**providers["apicbase"], "CLIENT_SECRET": "not-the-secret"}
    settings.OAUTH_CONNECT = {
        **settings.OAUTH_CONNECT,
        "PROVIDERS": {**providers, "apicbase": broken},
    }
    with pytest.raises(ProviderError):  # invalid_client: refresh_failed
        refresh_connection(connection, force=True)
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "PROVIDERS": providers}
    refresh_connection(connection, force=True)  # refreshed, then recovered
    RefreshToken.objects.get(token=connection.refresh_token).revoke()
    with pytest.raises(ReauthorizationRequired):
        refresh_connection(connection, force=True)  # reauth_required
    disconnect(connection)  # disconnected
    shop = connect_with_credentials(  # connected
        organisation, "custobar", company="acme", username="alice", password=PASSWORD
    )
    rotate_token(shop)  # rotated

    assert [name for name, _, _ in spy] == [
        "connection_connected",
        "connection_refreshed",
        "connection_refresh_failed",
        "connection_refreshed",
        "connection_recovered",
        "connection_reauth_required",
        "connection_disconnected",
        "connection_connected",
        "connection_rotated",
    ]
    documented = documented_signals()
    for name, sender, kwargs in spy:
        assert sender is Connection
        assert set(kwargs) - {"signal"} == documented[name], name
        assert kwargs["event"].kind == name.removeprefix("connection_")
        assert isinstance(kwargs["connection"], Connection)
        if "error" in kwargs:
            expected = (
                ReauthorizationRequired
                if name == "connection_reauth_required"
                else (ProviderError, TokensNotStored)
            )
            assert isinstance(kwargs["error"], expected)
    # Each event's log line: the level and fields of the page's table.
    rows = {names(row[0]).pop(): row for row in table("Log events")}
    records = [r for r in caplog.records if r.name == "oauth_connect"]
    for kind in ConnectionEvent.Kind.values:
        [record, *_] = [r for r in records if getattr(r, "event", None) == kind]
        assert names(rows[kind][1]) == {record.levelname}, kind
        for field in names(rows[kind][2]):
            assert getattr(record, field) is not None, (kind, field)


# The LOGGING sample, applied for real and undone -------------------------------------------


@contextmanager
def logging_configured(config: dict[str, Any]) -> Iterator[None]:
    """Apply ``config`` as Django does at start-up (``logging.config.dictConfig``), then put
    the logging module back exactly as it was, for the rest of the test session."""
    loggers = [logging.root] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(lg, lg.level, lg.handlers[:], lg.propagate, lg.disabled) for lg in loggers]
    # dictConfig forgets (and closes) every named handler; keep the registries to restore.
    named, handler_refs = dict(logging._handlers), list(logging._handlerList)  # type: ignore[attr-defined]
    logging.config.dictConfig(config)
    added = {
        h
        for lg in logging.root.manager.loggerDict.values()
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
    }
    try:
        yield
    finally:
        for lg, level, handlers, propagate, disabled in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled
        for handler in added - {h for _, _, handlers, _, _ in saved for h in handlers}:
            handler.close()
        logging._handlers.clear()  # type: ignore[attr-defined]
        logging._handlers.update(named)  # type: ignore[attr-defined]
        logging._handlerList[:] = handler_refs  # type: ignore[attr-defined]


def test_the_logging_sample_writes_each_record_as_json_with_its_fields(
    signals_page: PageRun,
    sandbox: Sandbox,
    browser: requests.Session,
    organisation: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox.connect(browser, "apicbase", label="production")
    connection = Connection.objects.get(tenant=organisation)
    capsys.readouterr()
    applied = signals_page.output_of("LOGGING = {")
    with logging_configured(applied["LOGGING"]):
        refresh_connection(connection, force=True)
        output = capsys.readouterr().err

    lines = [json.loads(line) for line in output.splitlines()]
    assert [line["event"] for line in lines] == ["refreshed"]
    [line] = lines
    shown = json.loads(signals_page.output_of('"event": "refreshed"'))
    assert set(line) == set(shown)
    assert line["level"] == "INFO"
    assert line["logger"] == "oauth_connect"
    assert line["message"] == f"{connection}: refreshed"
    assert (line["provider"], line["connection_id"], line["tenant_id"]) == (
        "apicbase",
        connection.pk,
        organisation.pk,
    )
    for secret in (connection.access_token, connection.refresh_token):
        assert secret not in output
    # Undone: the oauth_connect logger is back as the project configured it.
    assert not any(
        type(h.formatter).__name__ == "JSONFormatter"
        for h in logging.getLogger("oauth_connect").handlers
    )

"""docs/commands.md: its samples run in page order against three Apicbase connections (the
page's ``production``, ``staging`` and ``reporting``), and each output the page shows is what
the command printed. The failures, exit statuses, option table and overlapping runs the page
describes are checked against the commands themselves."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from io import StringIO
from typing import Any
from urllib.parse import parse_qsl

import pytest
import responses
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command, load_command_class
from django.core.management.base import BaseCommand
from django.db import connection as db
from responses import matchers

from example_project.tenants.models import Organisation
from oauth_connect._internal.durations import parse_duration
from oauth_connect.models import Connection
from tests.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    KEY,
    OLD_KEY,
    oauth_connect_settings,
    race,
    token_body,
)
from tests.docs.harness import DOCS, Block, PageRun, blocks

# The refresh_tokens --workers threads of the cron line need rows other connections can see.
pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "commands.md"
# Apicbase's own token endpoint (the provider's default, as in the page's messages), answered
# by `responses`: nothing reaches Apicbase.
TOKEN_URL = "https://api.apicbase.com/oauth/token/"
WEEK = timedelta(days=7)
# The ids the page shows.
DOCUMENTED_IDS = {"production": 12, "staging": 13, "reporting": 14}
DOCUMENTED_TENANT = 3


@pytest.fixture(autouse=True)
def apicbase_with_its_own_urls(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": {"CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET}}
    )


@pytest.fixture
def now(frozen_now: datetime) -> datetime:
    return frozen_now


def answer_refresh(http_mock: responses.RequestsMock, refresh_token: str, **response: Any) -> None:
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        match=[
            matchers.urlencoded_params_matcher(
                {"grant_type": "refresh_token", "refresh_token": refresh_token},
                strict_match=False,
            )
        ],
        **response,
    )


def week_token(n: int) -> dict[str, Any]:
    """What Apicbase answers a refresh: a 7-day access token and a rotated refresh token."""
    return token_body(n, expires_in=int(WEEK.total_seconds()))


def the_pages_connections(
    make_connection: Callable[..., Connection], now: datetime
) -> dict[str, Connection]:
    """What the page's outputs show: ``production`` (a 7-day token expiring in 10 minutes),
    ``staging`` (a 1-hour token refreshed 5 minutes ago) and ``reporting`` (a 7-day token
    expiring in 36 hours), made in this order so their ids are too."""
    return {
        "production": make_connection(
            label="production",
            refresh_token="refresh-production",
            expires_at=now + timedelta(minutes=10),
            last_refreshed_at=now + timedelta(minutes=10) - WEEK,
        ),
        "staging": make_connection(
            label="staging",
            refresh_token="refresh-staging",
            expires_at=now + timedelta(minutes=55),
            last_refreshed_at=now - timedelta(minutes=5),
        ),
        "reporting": make_connection(
            label="reporting",
            refresh_token="refresh-reporting",
            expires_at=now + timedelta(hours=36),
            last_refreshed_at=now + timedelta(hours=36) - WEEK,
        ),
    }


def documented_ids(connections: dict[str, Connection]) -> dict[int, int]:
    return {connections[label].pk: number for label, number in DOCUMENTED_IDS.items()}


def as_documented(text: str, ids: dict[int, int]) -> str:
    """The command's text output with the real connection ids replaced by the page's."""
    return re.sub(r"#(\d+)", lambda match: f"#{ids[int(match.group(1))]}", text).strip()


def entry_as_documented(
    entry: dict[str, Any], ids: dict[int, int], tenant: Organisation
) -> dict[str, Any]:
    assert entry["tenant_id"] == tenant.pk
    return {
        **entry,
        "connection_id": ids[entry["connection_id"]],
        "tenant_id": DOCUMENTED_TENANT,
    }


def report_as_documented(
    report: dict[str, Any], ids: dict[int, int], tenant: Organisation
) -> dict[str, Any]:
    entries = [entry_as_documented(entry, ids, tenant) for entry in report["connections"]]
    return {**report, "connections": entries}


def page_block(needle: str) -> Block:
    """The one block of the page whose code contains ``needle``."""
    found = [block for block in blocks(PAGE) if needle in block.code]
    assert len(found) == 1, f"{len(found)} blocks of docs/{PAGE} contain {needle!r}"
    return found[0]


def output_and_documented(run: PageRun, command: str) -> tuple[str, str]:
    """What the ``sh`` block running ``command`` printed, and the block after it on the page
    (what the page says it prints)."""
    for index, (block, output) in enumerate(run.outputs):
        if block.language == "sh" and block.code.strip() == command:
            documented = run.outputs[index + 1][0]
            assert documented.language in ("text", "json"), f"{block} shows no output"
            return output[0], documented.code
    raise AssertionError(f"docs/{PAGE} has no sh block running {command!r}")


def refresh_tokens(*args: str) -> tuple[int, str]:
    """Run refresh_tokens; its exit status and standard output."""
    out = StringIO()
    try:
        call_command("refresh_tokens", *args, stdout=out, stderr=StringIO())
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()


def stored_tokens(pk: int) -> tuple[str, str]:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, refresh_token FROM oauth_connect_connection WHERE id = %s", [pk]
        )
        return cursor.fetchone()


# The page, run -----------------------------------------------------------------------------------


def test_the_commands_page_runs_and_prints_what_it_shows(
    run_docs_page: Callable[..., PageRun],
    settings: Any,
    make_connection: Callable[..., Connection],
    organisation: Organisation,
    http_mock: responses.RequestsMock,
    now: datetime,
    eager_celery: Any,
) -> None:
    # Stored under an older key, which the run below rotates away.
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [OLD_KEY]
    connections = the_pages_connections(make_connection, now)
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [KEY, OLD_KEY]
    ids = documented_ids(connections)
    answer_refresh(http_mock, "refresh-production", json=week_token(2))
    answer_refresh(http_mock, "refresh-reporting", json=week_token(3))

    run = run_docs_page("commands.md")

    # A dry run lists production only: staging's token is not half-way through its life.
    output, documented = output_and_documented(run, "python manage.py refresh_tokens --dry-run")
    assert as_documented(output, ids) == documented.strip()

    # The real run refreshes production and skips staging, as the page says.
    output, documented = output_and_documented(run, "python manage.py refresh_tokens")
    assert as_documented(output, ids) == documented.strip()

    # --within 2d reaches reporting; the JSON document is the page's, key for key, in order.
    output, documented = output_and_documented(
        run, "python manage.py refresh_tokens --within 2d --json"
    )
    real, shown = json.loads(output), json.loads(documented)
    assert list(real) == list(shown)
    assert [list(entry) for entry in real["connections"]] == [
        list(entry) for entry in shown["connections"]
    ]
    assert report_as_documented(real, ids, organisation) == shown
    assert len(output.strip().splitlines()) == 1  # one line per run: the log is JSON Lines

    # The cron line ran too: one JSON line, with the same keys; only staging is listed now.
    [cron_block] = [block for block, _ in run.outputs if block.language == "cron"]
    [cron_output] = run.output_of(cron_block.code)
    assert len(cron_output.strip().splitlines()) == 1
    cron_report = json.loads(cron_output)
    assert list(cron_report) == list(shown)
    assert [(e["label"], e["outcome"]) for e in cron_report["connections"]] == [
        ("staging", "skipped")
    ]

    # Each refresh called Apicbase once, and stored what it answered.
    assert len(http_mock.calls) == 2
    production = Connection.objects.get(pk=connections["production"].pk)
    assert production.access_token == "access-token-2"
    assert production.expires_at == now + WEEK
    assert Connection.objects.get(pk=connections["reporting"].pk).access_token == "access-token-3"
    assert Connection.objects.get(pk=connections["staging"].pk).access_token == "access-token-1"

    # The Celery settings were applied and name a task the worker has.
    from oauth_connect.contrib.celery import refresh_due_connections_task

    assert settings.CELERY_IMPORTS == ["oauth_connect.contrib.celery"]
    schedule = settings.CELERY_BEAT_SCHEDULE["oauth-connect-refresh-due-connections"]
    assert schedule["task"] == refresh_due_connections_task.name
    assert schedule["task"] in eager_celery.tasks

    # The rotation re-encrypted the six tokens of the three connections with the first key.
    output, documented = output_and_documented(run, "python manage.py rotate_encryption_keys")
    assert output.strip() == documented.strip()
    for connection in connections.values():
        for ciphertext in stored_tokens(connection.pk):
            assert Fernet(KEY).decrypt(ciphertext.encode())
            with pytest.raises(InvalidToken):
                Fernet(OLD_KEY).decrypt(ciphertext.encode())


def test_the_beat_schedule_refreshes_what_refresh_tokens_would(
    settings: Any,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
    now: datetime,
    eager_celery: Any,
) -> None:
    from celery.schedules import crontab

    from oauth_connect.contrib.celery import refresh_due_connections_task

    block = page_block("CELERY_BEAT_SCHEDULE")
    values: dict[str, Any] = {}
    exec(compile(block.code, str(block), "exec"), values)  # noqa: S102 - the page's settings
    schedule = values["CELERY_BEAT_SCHEDULE"]["oauth-connect-refresh-due-connections"]
    assert schedule["schedule"] == crontab(minute="*/15")
    connections = the_pages_connections(make_connection, now)
    answer_refresh(http_mock, "refresh-production", json=week_token(2))

    # What beat sends every 15 minutes, run here and now.
    result = refresh_due_connections_task.apply(kwargs=schedule["kwargs"]).get()

    # Like refresh_tokens --within 1d: all but reporting listed, production refreshed.
    assert result["enqueued"] == 2
    assert result["within_seconds"] == 24 * 3600
    assert len(http_mock.calls) == 1
    production = Connection.objects.get(pk=connections["production"].pk)
    assert production.access_token == "access-token-2"


# Failures and exit statuses ---------------------------------------------------------------------


def test_a_failing_run_prints_what_the_page_shows_and_exits_1(
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
    now: datetime,
) -> None:
    connections = {
        "production": make_connection(label="production", refresh_token="refresh-production"),
        "staging": make_connection(label="staging", refresh_token="refresh-staging"),
        "reporting": make_connection(
            label="reporting",
            refresh_token="refresh-reporting",
            expires_at=now + timedelta(hours=20),
            last_refreshed_at=now + timedelta(hours=20) - WEEK,
        ),
    }
    answer_refresh(http_mock, "refresh-production", status=400, json={"error": "invalid_grant"})
    answer_refresh(http_mock, "refresh-staging", json=week_token(2))
    answer_refresh(
        http_mock, "refresh-reporting", status=503, json={"error": "temporarily_unavailable"}
    )

    status, output = refresh_tokens()

    assert status == 1
    documented = page_block("2 failed").code
    assert as_documented(output, documented_ids(connections)) == documented.strip()
    # What the page says the failures did to the connections.
    production = Connection.objects.get(pk=connections["production"].pk)
    reporting = Connection.objects.get(pk=connections["reporting"].pk)
    assert production.status == Connection.Status.REAUTH_REQUIRED
    assert reporting.status == Connection.Status.ERROR
    assert reporting.refresh_token == "refresh-reporting"  # kept for the retry
    assert reporting.retry_not_before == now + timedelta(seconds=60)
    # The next run leaves both alone (and staging now has a fresh 7-day token).
    assert refresh_tokens() == (0, "0 due, 0 refreshed, 0 skipped, 0 failed\n")


def test_a_failed_entry_in_the_json_document_is_the_pages(
    make_connection: Callable[..., Connection],
    organisation: Organisation,
    http_mock: responses.RequestsMock,
) -> None:
    reporting = make_connection(label="reporting", refresh_token="refresh-reporting")
    answer_refresh(
        http_mock, "refresh-reporting", status=503, json={"error": "temporarily_unavailable"}
    )

    status, output = refresh_tokens("--json")

    assert status == 1
    [entry] = json.loads(output)["connections"]
    shown = json.loads(page_block('"outcome": "failed"').code)
    assert list(entry) == list(shown)
    ids = {reporting.pk: DOCUMENTED_IDS["reporting"]}
    assert entry_as_documented(entry, ids, organisation) == shown


def documented_exit_statuses() -> dict[str, str]:
    text = (DOCS / PAGE).read_text()
    rows = re.findall(r"^\| ([012]) \| (.+) \|$", text, re.M)
    return dict(rows)


def manage(*argv: str) -> int:
    """Run ``manage.py <argv>`` as from a shell (Django's own argument and error handling, then
    ``sys.exit``); its exit status."""
    command = load_command_class("oauth_connect", argv[0])
    try:
        command.run_from_argv(["manage.py", *argv])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_exit_statuses_are_the_documented_ones(
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    statuses = documented_exit_statuses()
    assert set(statuses) == {"0", "1", "2"}

    # 0: nothing failed (here, nothing was due).
    assert manage("refresh_tokens") == 0
    assert capsys.readouterr().out == "0 due, 0 refreshed, 0 skipped, 0 failed\n"

    # 1: a failed refresh.
    make_connection(refresh_token="refresh-production")
    answer_refresh(http_mock, "refresh-production", status=500, json={"error": "server_error"})
    assert manage("refresh_tokens") == 1
    assert capsys.readouterr().out.endswith("1 due, 0 refreshed, 0 skipped, 1 failed\n")

    # 1: a CommandError, which manage.py prints as the page quotes it.
    assert manage("refresh_tokens", "--workers", "0") == 1
    [quoted] = re.findall(r"`(CommandError: [^`]+)`", statuses["1"])
    assert capsys.readouterr().err.strip().endswith(quoted)

    # 2: a malformed argument: the usage, then the error.
    assert manage("refresh_tokens", "--within", "soon") == 2
    assert "`--within soon`" in statuses["2"]
    err = capsys.readouterr().err
    assert err.startswith("usage: manage.py refresh_tokens")
    assert "error: argument --within: 'soon' is not a duration" in err


# The tables ------------------------------------------------------------------------------------


def table_first_cells(section: str) -> list[str]:
    """The first cell of each table row in the page's section headed ``section``."""
    text = (DOCS / PAGE).read_text()
    body = text.split(f"\n{section}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", body, re.M)


def test_the_options_table_lists_every_option_with_its_default() -> None:
    command = load_command_class("oauth_connect", "refresh_tokens")
    parser = command.create_parser("manage.py", "refresh_tokens")
    base = BaseCommand().create_parser("manage.py", "refresh_tokens")
    own = {
        option
        for action in parser._actions
        for option in action.option_strings
        if option not in {o for a in base._actions for o in a.option_strings}
    }
    documented = {cell.split()[0] for cell in table_first_cells("### Options")}

    assert documented - {"-v"} == own
    defaults = {action.dest: action.default for action in parser._actions}
    assert defaults["within"] == parse_duration("1d")
    assert defaults["workers"] == 1
    assert defaults["providers"] is None and defaults["tenant"] is None
    assert defaults["dry_run"] is False and defaults["as_json"] is False
    # Django's usual options, as the page lists them, are every command's.
    usual = re.findall(r"`(-[-\w]+)`", (DOCS / PAGE).read_text())
    base_options = {o for a in base._actions for o in a.option_strings}
    for option in ("--settings", "--pythonpath", "--traceback", "--skip-checks", "-v"):
        assert option in usual and option in base_options


def test_the_json_key_tables_list_every_key(
    make_connection: Callable[..., Connection], http_mock: responses.RequestsMock
) -> None:
    make_connection(refresh_token="refresh-production")
    answer_refresh(http_mock, "refresh-production", json=week_token(2))

    report = json.loads(refresh_tokens("--json")[1])

    documented = table_first_cells("### Output")
    assert documented == [*report, *report["connections"][0]]


# Several runs at once --------------------------------------------------------------------------


def test_overlapping_runs_refresh_each_connection_once(
    make_connection: Callable[..., Connection], http_mock: responses.RequestsMock
) -> None:
    connections = [make_connection(label=f"set-{n}", refresh_token=f"r-{n}") for n in range(6)]

    def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
        n = dict(parse_qsl(request.body))["refresh_token"].removeprefix("r-")
        body = {**week_token(2), "access_token": f"a2-{n}", "refresh_token": f"r2-{n}"}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=token_endpoint)

    def one_run() -> dict[str, Any]:
        status, output = refresh_tokens("--workers", "2", "--json")
        assert status == 0
        return json.loads(output)

    reports = race(2, one_run)

    assert all(isinstance(report, dict) for report in reports), reports
    assert len(http_mock.calls) == len(connections)  # one call per connection, all runs taken
    assert sum(report["refreshed"] for report in reports) == len(connections)
    for report in reports:
        assert report["failed"] == 0
        assert report["due"] == report["refreshed"] + report["skipped"]
    for connection in connections:
        current = Connection.objects.get(pk=connection.pk)
        assert current.access_token == f"a2-{connection.label.removeprefix('set-')}"
        assert current.events.count() == 1


# rotate_encryption_keys ------------------------------------------------------------------------


def test_a_rotation_that_meets_an_unknown_key_fails_as_the_page_shows(
    settings: Any, make_connection: Callable[..., Connection]
) -> None:
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [OLD_KEY]
    orphan = make_connection(label="reporting")
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [KEY]  # the old key removed too early
    readable = make_connection(label="production")
    orphan_before = stored_tokens(orphan.pk)
    err = StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("rotate_encryption_keys", stdout=StringIO(), stderr=err)

    assert excinfo.value.returncode == 1
    printed = f"{err.getvalue()}CommandError: {excinfo.value}"
    ids = {orphan.pk: DOCUMENTED_IDS["reporting"]}
    assert as_documented(printed, ids) == page_block("no configured key").code.strip()
    assert stored_tokens(orphan.pk) == orphan_before  # left as it was
    assert Connection.objects.get(pk=readable.pk).access_token == "access-token-1"

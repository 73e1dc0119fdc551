"""``manage.py refresh_tokens`` and ``manage.py rotate_encryption_keys``, against a fake token
endpoint (``responses``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from io import StringIO
from typing import Any
from urllib.parse import parse_qsl

import pytest
import responses
import time_machine
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone
from responses import matchers

from example_project.tenants.models import Organisation
from oauth_connect.models import ClientCredentials, Connection, ConnectionEvent
from oauth_connect.signals import connection_recovered, connection_refresh_failed
from tests.conftest import (
    CLIENT_SECRET,
    KEY,
    OLD_KEY,
    TOKEN_URL,
    apicbase_settings,
    oauth_connect_settings,
    postgres_configured,
    requires_postgres,
    token_body,
)

Status = Connection.Status
ACME_TOKEN_URL = "https://auth.acme.test/token"


def refresh_tokens(*args: str, **options: Any) -> tuple[int, str, str]:
    """Run the command; return its exit status, stdout and stderr."""
    out, err = StringIO(), StringIO()
    try:
        call_command("refresh_tokens", *args, stdout=out, stderr=err, **options)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def answer_refresh(
    http_mock: responses.RequestsMock, refresh_token: str, url: str = TOKEN_URL, **response: Any
) -> None:
    """Have the token endpoint answer ``response`` to a refresh with ``refresh_token``."""
    http_mock.add(
        responses.POST,
        url,
        match=[
            matchers.urlencoded_params_matcher(
                {"grant_type": "refresh_token", "refresh_token": refresh_token},
                strict_match=False,
            )
        ],
        **response,
    )


def reload(connection: Connection) -> Connection:
    return Connection.objects.get(pk=connection.pk)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# Which connections are due ---------------------------------------------------------------------


def test_refreshes_only_due_connections(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    due = make_connection(label="due", refresh_token="refresh-due", expires_at=frozen_now)
    later = make_connection(label="later", expires_at=frozen_now + timedelta(days=2))
    gone = make_connection(
        label="gone",
        status=Status.DISCONNECTED,
        access_token="",
        refresh_token="",
        expires_at=frozen_now + timedelta(hours=1),
    )
    reauth = make_connection(
        label="reauth", status=Status.REAUTH_REQUIRED, expires_at=frozen_now - timedelta(hours=1)
    )
    waiting = make_connection(
        label="waiting",
        status=Status.ERROR,
        consecutive_failures=2,
        retry_not_before=frozen_now + timedelta(minutes=10),
        expires_at=frozen_now - timedelta(minutes=5),
    )
    answer_refresh(http_mock, "refresh-due", json=token_body(2))

    status, out, err = refresh_tokens()

    assert status == 0
    assert err == ""
    assert lines(out) == [
        f"apicbase (due) #{due.pk}: refreshed",
        "1 due, 1 refreshed, 0 skipped, 0 failed",
    ]
    assert len(http_mock.calls) == 1
    due = reload(due)
    assert due.access_token == "access-token-2"
    assert due.refresh_token == "refresh-token-2"
    assert due.expires_at == frozen_now + timedelta(hours=1)
    assert due.last_refreshed_at == frozen_now
    assert list(due.events.values_list("kind", flat=True)) == [ConnectionEvent.Kind.REFRESHED]
    for untouched, status_before in [
        (later, Status.ACTIVE),
        (gone, Status.DISCONNECTED),
        (reauth, Status.REAUTH_REQUIRED),
        (waiting, Status.ERROR),
    ]:
        current = reload(untouched)
        assert current.status == status_before
        assert current.last_refreshed_at is None
        assert current.refresh_token == untouched.refresh_token
        assert not current.events.exists()


def test_connection_in_error_is_retried_once_its_wait_is_over(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    connection = make_connection(
        status=Status.ERROR,
        consecutive_failures=1,
        last_error="The token endpoint answered HTTP 502.",
        retry_not_before=frozen_now - timedelta(seconds=1),
        expires_at=frozen_now + timedelta(minutes=5),
    )
    answer_refresh(http_mock, "refresh-token-1", json=token_body(2))

    status, out, _ = refresh_tokens()

    assert status == 0
    assert f"#{connection.pk}: refreshed" in out
    connection = reload(connection)
    assert connection.status == Status.ACTIVE
    assert connection.last_error == ""
    assert connection.consecutive_failures == 0
    assert connection.retry_not_before is None


def test_within_widens_what_is_due(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    soon = make_connection(label="soon", refresh_token="refresh-soon")
    later = make_connection(
        label="later", refresh_token="refresh-later", expires_at=frozen_now + timedelta(days=2)
    )
    answer_refresh(http_mock, "refresh-soon", json=token_body(2))
    answer_refresh(http_mock, "refresh-later", json=token_body(3))

    status, out, _ = refresh_tokens("--within", "3d")

    assert status == 0
    assert "2 due, 2 refreshed, 0 skipped, 0 failed" in out
    assert reload(soon).access_token == "access-token-2"
    assert reload(later).access_token == "access-token-3"


def test_within_narrows_what_is_due(
    frozen_now: datetime, make_connection: Callable[..., Connection]
) -> None:
    connection = make_connection(expires_at=frozen_now + timedelta(hours=1))

    status, out, _ = refresh_tokens("--within", "30m")

    assert status == 0
    assert lines(out) == ["0 due, 0 refreshed, 0 skipped, 0 failed"]
    assert reload(connection).access_token == "access-token-1"


@pytest.mark.parametrize("within", ["soon", "-1d", "1y", ""])
def test_invalid_within_is_an_error(within: str, db: None) -> None:
    with pytest.raises(CommandError, match="not a duration"):
        refresh_tokens(f"--within={within}")


def test_workers_must_be_positive(db: None) -> None:
    with pytest.raises(CommandError, match="--workers"):
        refresh_tokens("--workers", "0")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ["--provider", "apicbsae"],
            r"--provider apicbsae: no such provider .*\(configured: apicbase",
        ),
        (["--tenant", "abc"], r"--tenant 'abc' is not a valid organisation primary key"),
        (["--tenant", "999999"], r"--tenant 999999: there is no organisation with this primary"),
    ],
)
def test_a_mistyped_filter_is_an_error_not_nothing_due(
    option: list[str], message: str, make_connection: Callable[..., Connection]
) -> None:
    make_connection(expires_at=None)  # something to refresh, were the filter ignored

    with pytest.raises(CommandError, match=message):
        refresh_tokens(*option)


def test_an_undecryptable_tenant_secret_is_reported_on_its_connection(
    settings: Any, make_connection: Callable[..., Connection], organisation: Organisation
) -> None:
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [OLD_KEY]
    ClientCredentials.objects.create(
        tenant=organisation, provider="apicbase", client_id="tenant-client", client_secret="s3"
    )
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [KEY]
    connection = make_connection(
        client_id="tenant-client", expires_at=timezone.now() + timedelta(minutes=1)
    )

    code, out, _ = refresh_tokens("--json")

    assert code == 1
    [entry] = json.loads(out)["connections"]
    assert (entry["connection_id"], entry["outcome"]) == (connection.pk, "failed")
    assert entry["error"].startswith("Can't decrypt client_secret of client credentials #")
    assert entry["error"].endswith("or enter this secret again in the admin.")


def test_provider_filter(
    settings: Any,
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={
            "apicbase": apicbase_settings(),
            "acme": {
                "AUTHORIZE_URL": "https://auth.acme.test/authorize",
                "TOKEN_URL": ACME_TOKEN_URL,
                "API_URL": "https://api.acme.test/",
                "CLIENT_ID": "acme-client",
                "CLIENT_SECRET": "acme-secret",
            },
        }
    )
    apicbase = make_connection()
    acme = make_connection(provider="acme", refresh_token="refresh-acme", client_id="acme-client")
    answer_refresh(http_mock, "refresh-acme", url=ACME_TOKEN_URL, json=token_body(2))

    status, out, _ = refresh_tokens("--provider", "acme")

    assert status == 0
    assert lines(out) == [f"acme #{acme.pk}: refreshed", "1 due, 1 refreshed, 0 skipped, 0 failed"]
    assert reload(acme).access_token == "access-token-2"
    assert reload(apicbase).access_token == "access-token-1"
    assert reload(apicbase).last_refreshed_at is None


def test_tenant_filter(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    organisation: Organisation,
    other_organisation: Organisation,
    http_mock: responses.RequestsMock,
) -> None:
    mine = make_connection(refresh_token="refresh-mine")
    theirs = make_connection(tenant=other_organisation, refresh_token="refresh-theirs")
    answer_refresh(http_mock, "refresh-theirs", json=token_body(2))

    status, out, _ = refresh_tokens("--tenant", str(other_organisation.pk))

    assert status == 0
    assert lines(out) == [
        f"apicbase #{theirs.pk}: refreshed",
        "1 due, 1 refreshed, 0 skipped, 0 failed",
    ]
    assert reload(theirs).access_token == "access-token-2"
    assert reload(mine).access_token == "access-token-1"


def test_dry_run_changes_nothing_and_calls_nobody(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    connection = make_connection(label="prod")
    before = reload(connection)

    status, out, _ = refresh_tokens("--dry-run")

    assert status == 0
    assert lines(out) == [
        f"apicbase (prod) #{connection.pk}: due",
        "1 due, 0 refreshed, 0 skipped, 0 failed (dry run)",
    ]
    assert len(http_mock.calls) == 0
    after = reload(connection)
    assert after.access_token == before.access_token
    assert after.refresh_token == before.refresh_token
    assert after.updated_at == before.updated_at
    assert after.last_refreshed_at is None
    assert not after.events.exists()


def test_verbosity_zero_prints_only_the_summary(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    make_connection()
    answer_refresh(http_mock, "refresh-token-1", json=token_body(2))

    status, out, _ = refresh_tokens(verbosity=0)

    assert status == 0
    assert lines(out) == ["1 due, 1 refreshed, 0 skipped, 0 failed"]


def test_json_output_counts_add_up(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    first = make_connection(label="a", refresh_token="refresh-a")
    second = make_connection(label="b", refresh_token="refresh-b")
    broken = make_connection(label="c", refresh_token="refresh-c")
    make_connection(label="not-due", expires_at=frozen_now + timedelta(days=3))
    answer_refresh(http_mock, "refresh-a", json=token_body(2))
    answer_refresh(http_mock, "refresh-b", json=token_body(3))
    answer_refresh(http_mock, "refresh-c", status=503, json={"error": "temporarily_unavailable"})

    status, out, _ = refresh_tokens("--json")

    assert status == 1
    report = json.loads(out)  # nothing but the JSON document
    assert report["dry_run"] is False
    assert (report["due"], report["refreshed"], report["skipped"], report["failed"]) == (3, 2, 0, 1)
    assert report["due"] == report["refreshed"] + report["skipped"] + report["failed"]
    outcomes = {entry["connection_id"]: entry["outcome"] for entry in report["connections"]}
    assert outcomes == {first.pk: "refreshed", second.pk: "refreshed", broken.pk: "failed"}
    failure = next(e for e in report["connections"] if e["connection_id"] == broken.pk)
    assert failure["status"] == Status.ERROR
    assert failure["label"] == "c"
    assert "503" in failure["error"]


def test_json_dry_run(frozen_now: datetime, make_connection: Callable[..., Connection]) -> None:
    connection = make_connection()

    status, out, _ = refresh_tokens("--json", "--dry-run")

    assert status == 0
    report = json.loads(out)
    assert report["dry_run"] is True
    assert report["due"] == 1
    assert report["connections"][0]["connection_id"] == connection.pk
    assert report["connections"][0]["outcome"] == "due"


def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
    """Answers refresh token r-LABEL with tokens a2-LABEL and r2-LABEL."""
    label = dict(parse_qsl(request.body))["refresh_token"].removeprefix("r-")
    body = {**token_body(), "access_token": f"a2-{label}", "refresh_token": f"r2-{label}"}
    return 200, {"Content-Type": "application/json"}, json.dumps(body)


@pytest.mark.django_db(transaction=True)
def test_workers_refresh_every_connection_once(
    make_connection: Callable[..., Connection], http_mock: responses.RequestsMock
) -> None:
    labels = [f"set-{n}" for n in range(10)]
    connections = {
        label: make_connection(label=label, refresh_token=f"r-{label}") for label in labels
    }

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=token_endpoint)

    status, out, _ = refresh_tokens("--workers", "4")

    assert status == 0
    assert "10 due, 10 refreshed, 0 skipped, 0 failed" in out
    assert len(http_mock.calls) == 10
    for label, connection in connections.items():
        assert f"apicbase ({label}) #{connection.pk}: refreshed" in out
        current = reload(connection)
        assert current.access_token == f"a2-{label}"
        assert current.refresh_token == f"r2-{label}"
        assert current.events.count() == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--processes", "0"], "--processes must be 1 or more"),
        (["--processes", "3", "--workers", "2"], "give at least --workers 3"),
    ],
)
def test_processes_must_be_possible(options: list[str], message: str, db: None) -> None:
    if not postgres_configured():
        message = message if "0" in options else "--processes needs PostgreSQL"
    with pytest.raises(CommandError, match=message):
        refresh_tokens(*options)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_processes_share_out_the_connections_and_report_through_this_one(
    make_connection: Callable[..., Connection], http_mock: responses.RequestsMock
) -> None:
    # The children inherit this process's fake token endpoint; their calls are counted in
    # their own memory, so the stored tokens and this process's report are what is checked.
    http_mock.assert_all_requests_are_fired = False
    labels = [f"set-{n}" for n in range(10)]
    connections = {
        label: make_connection(label=label, refresh_token=f"r-{label}") for label in labels
    }

    http_mock.add_callback(responses.POST, TOKEN_URL, callback=token_endpoint)

    status, out, _ = refresh_tokens("--workers", "4", "--processes", "2", "--json")

    assert status == 0
    report = json.loads(out)
    assert (report["due"], report["refreshed"], report["failed"]) == (10, 10, 0)
    assert sorted(r["connection_id"] for r in report["connections"]) == sorted(
        c.pk for c in connections.values()
    )
    for label, connection in connections.items():
        current = reload(connection)
        assert (current.access_token, current.refresh_token) == (f"a2-{label}", f"r2-{label}")
        assert current.events.count() == 1


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_process_that_crashes_is_an_error_naming_what_it_raised(
    make_connection: Callable[..., Connection], monkeypatch: Any
) -> None:
    from oauth_connect.services import bulk

    make_connection(expires_at=timezone.now())

    def broken_listing(queryset: Any) -> Any:
        raise RuntimeError("a listing that fails, with text that must not be shown")

    monkeypatch.setattr(bulk, "_pages", broken_listing)  # inherited by the forked children

    with pytest.raises(CommandError) as raised:
        refresh_tokens("--workers", "2", "--processes", "2")
    assert str(raised.value).startswith("2 of 2 processes failed: RuntimeError, RuntimeError.")
    assert "must not be shown" not in str(raised.value)


# Failures -------------------------------------------------------------------------------------


def test_failures_exit_non_zero_and_name_the_connection_without_secrets(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    dead = make_connection(label="dead", access_token="access-dead", refresh_token="refresh-dead")
    flaky = make_connection(
        label="flaky", access_token="access-flaky", refresh_token="refresh-flaky"
    )
    fine = make_connection(label="fine", refresh_token="refresh-fine")
    # Providers echo what they were sent; none of it may reach the output.
    answer_refresh(
        http_mock,
        "refresh-dead",
        status=400,
        json={"error": "invalid_grant", "error_description": "refresh-dead was already used"},
    )
    answer_refresh(
        http_mock,
        "refresh-flaky",
        status=500,
        json={"error": "server_error", "error_description": f"bad client {CLIENT_SECRET}"},
    )
    answer_refresh(http_mock, "refresh-fine", json=token_body(2))

    status, out, err = refresh_tokens()

    assert status == 1
    output = lines(out + err)
    dead_line = next(line for line in output if f"#{dead.pk}" in line)
    flaky_line = next(line for line in output if f"#{flaky.pk}" in line)
    assert dead_line.startswith(f"apicbase (dead) #{dead.pk}: failed: ")
    assert "invalid_grant" in dead_line
    assert "reconnect" in dead_line
    assert flaky_line.startswith(f"apicbase (flaky) #{flaky.pk}: failed: ")
    assert "HTTP 500" in flaky_line
    assert f"apicbase (fine) #{fine.pk}: refreshed" in output
    assert output[-1] == "3 due, 1 refreshed, 0 skipped, 2 failed"
    for secret in [
        "access-dead",
        "refresh-dead",
        "access-flaky",
        "refresh-flaky",
        "refresh-fine",
        "access-token-2",
        "refresh-token-2",
        CLIENT_SECRET,
    ]:
        assert secret not in out
        assert secret not in err

    dead, flaky = reload(dead), reload(flaky)
    assert dead.status == Status.REAUTH_REQUIRED
    assert "invalid_grant" in dead.last_error
    assert "refresh-dead" not in dead.last_error
    assert flaky.status == Status.ERROR
    assert CLIENT_SECRET not in flaky.last_error
    # A transient failure keeps the tokens for the retry.
    assert flaky.refresh_token == "refresh-flaky"
    assert reload(fine).status == Status.ACTIVE


def test_reauth_required_is_not_retried(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    connection = make_connection()
    answer_refresh(http_mock, "refresh-token-1", status=400, json={"error": "invalid_grant"})
    assert refresh_tokens()[0] == 1

    status, out, _ = refresh_tokens()

    assert status == 0
    assert lines(out) == ["0 due, 0 refreshed, 0 skipped, 0 failed"]
    assert len(http_mock.calls) == 1
    assert reload(connection).status == Status.REAUTH_REQUIRED


# Backoff --------------------------------------------------------------------------------------


def test_transient_failure_backs_off_then_recovers(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
    django_capture_on_commit_callbacks: Any,
) -> None:
    connection = make_connection()
    answer_refresh(http_mock, "refresh-token-1", status=500, json={"error": "server_error"})
    failed: list[dict[str, Any]] = []
    recovered: list[dict[str, Any]] = []

    def on_failed(sender: Any, **kwargs: Any) -> None:
        failed.append(kwargs)

    def on_recovered(sender: Any, **kwargs: Any) -> None:
        recovered.append(kwargs)

    connection_refresh_failed.connect(on_failed)
    connection_recovered.connect(on_recovered)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert refresh_tokens()[0] == 1

        current = reload(connection)
        assert current.status == Status.ERROR
        assert current.consecutive_failures == 1
        assert current.retry_not_before == frozen_now + timedelta(seconds=60)
        assert [kwargs["connection"].pk for kwargs in failed] == [connection.pk]
        assert failed[0]["error"].status_code == 500

        # Straight away: not due, so no second call to the provider.
        status, out, _ = refresh_tokens()
        assert status == 0
        assert lines(out) == ["0 due, 0 refreshed, 0 skipped, 0 failed"]
        assert len(http_mock.calls) == 1

        http_mock.replace(responses.POST, TOKEN_URL, json=token_body(2))
        with (
            time_machine.travel(frozen_now + timedelta(seconds=61), tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            status, out, _ = refresh_tokens()

        assert status == 0
        assert f"#{connection.pk}: refreshed" in out
        assert len(http_mock.calls) == 2
        assert [kwargs["connection"].pk for kwargs in recovered] == [connection.pk]
        assert recovered[0]["event"].kind == ConnectionEvent.Kind.RECOVERED
    finally:
        connection_refresh_failed.disconnect(on_failed)
        connection_recovered.disconnect(on_recovered)

    current = reload(connection)
    assert current.status == Status.ACTIVE
    assert current.access_token == "access-token-2"
    assert current.consecutive_failures == 0
    assert current.retry_not_before is None
    assert current.last_error == ""


def test_backoff_doubles_with_each_failure(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    connection = make_connection()
    answer_refresh(http_mock, "refresh-token-1", status=502, json={"error": "bad_gateway"})
    assert refresh_tokens()[0] == 1

    later = frozen_now + timedelta(seconds=61)
    with time_machine.travel(later, tick=False):
        assert refresh_tokens()[0] == 1

    current = reload(connection)
    assert len(http_mock.calls) == 2
    assert current.consecutive_failures == 2
    assert current.retry_not_before == later + timedelta(seconds=120)


def test_retry_after_is_honoured(
    frozen_now: datetime,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    connection = make_connection()
    answer_refresh(
        http_mock,
        "refresh-token-1",
        status=503,
        json={"error": "temporarily_unavailable"},
        headers={"Retry-After": "900"},
    )

    assert refresh_tokens()[0] == 1

    assert reload(connection).retry_not_before == frozen_now + timedelta(seconds=900)


# rotate_encryption_keys -----------------------------------------------------------------------


def test_rotate_encryption_keys_reports_counts(
    make_connection: Callable[..., Connection], organisation: Organisation
) -> None:
    make_connection(label="both")
    make_connection(label="access-only", refresh_token="")
    make_connection(label="empty", access_token="", refresh_token="")
    ClientCredentials.objects.create(
        tenant=organisation, provider="apicbase", client_id="c", client_secret="s3cret-value"
    )
    out = StringIO()

    call_command("rotate_encryption_keys", stdout=out)

    assert lines(out.getvalue()) == [
        "Re-encrypted 4 value(s) in 4 row(s).",
        "Every secret is now encrypted with the first key.",
    ]


def test_a_run_runs_the_settings_checks_but_not_the_database_ones(
    db: None, settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # What docs/commands.md says: W001 (SQLite) comes with migrate and check --database, not
    # with every cron run; a settings error stops the run.
    call_command("refresh_tokens", stdout=StringIO(), skip_checks=False)
    assert "W001" not in capsys.readouterr().err
    out = StringIO()
    call_command("check", "--database", "default", stdout=out, stderr=out)
    assert ("oauth_connect.W001" in out.getvalue()) == (
        settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    )
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "ENCRYPTION_KEYS": ["not a key"]}
    with pytest.raises(SystemCheckError, match="oauth_connect.E004"):
        call_command("refresh_tokens", stdout=StringIO(), skip_checks=False)

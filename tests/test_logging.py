"""The log-line contract that tests/conftest.py checks on every test, checked itself."""

from __future__ import annotations

import logging
import sys

from oauth_connect.models import Connection
from tests.conftest import CLIENT_SECRET, _LogLineChecker


def checked(message: str, **extra: object) -> list[str]:
    checker = _LogLineChecker()
    record = logging.LogRecord("oauth_connect", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    checker.emit(record)
    return checker.problems


def test_a_structured_secret_free_line_passes() -> None:
    assert checked("apicbase connection #1: refreshed", event="refreshed", provider="x") == []


def test_a_line_without_its_fields_is_reported() -> None:
    assert checked("apicbase connection #1: refreshed") == [
        "'apicbase connection #1: refreshed' lacks extra=['event', 'provider']"
    ]


def test_a_secret_in_the_message_or_the_fields_is_reported() -> None:
    fields = {"event": "refreshed", "provider": "apicbase"}
    assert checked("got access-token-2", **fields) == ["'got access-token-2' shows a secret"]
    assert checked("refreshed", secret=CLIENT_SECRET, **fields) == ["'refreshed' shows a secret"]


def test_a_stored_secret_of_any_shape_is_reported() -> None:
    checker = _LogLineChecker()
    connection = Connection(access_token="live-Tk9-zz31", credentials='{"password": "hunter2-x"}')
    checker.remember_secrets(Connection, connection)
    for leak in ("sent live-Tk9-zz31", "login hunter2-x"):
        record = logging.LogRecord("oauth_connect", 30, __file__, 1, leak, None, None)
        record.__dict__.update(event="refreshed", provider="apicbase")
        checker.emit(record)
    assert checker.problems == [
        "'sent live-Tk9-zz31' shows a secret",
        "'login hunter2-x' shows a secret",
    ]


def test_a_secret_in_a_logged_exceptions_cause_is_reported() -> None:
    try:
        try:
            raise ValueError("upstream said access-token-7")
        except ValueError as err:
            raise RuntimeError("refresh crashed") from err
    except RuntimeError:
        exc_info = sys.exc_info()
    checker = _LogLineChecker()
    record = logging.LogRecord("oauth_connect", 40, __file__, 1, "crashed", None, exc_info)
    record.__dict__.update(event="refresh_crashed")
    checker.emit(record)
    assert checker.problems == ["'crashed' shows a secret"]

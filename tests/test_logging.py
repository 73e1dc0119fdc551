"""The log-line contract that tests/conftest.py checks on every test, checked itself."""

from __future__ import annotations

import logging

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

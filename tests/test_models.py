"""A connection's name: the provider as people spell it, and never an error."""

from __future__ import annotations

from typing import Any

import pytest

from oauth_connect.models import Connection
from oauth_connect.providers.apicbase import ApicbaseProvider


def test_a_connection_is_named_by_its_providers_display_name() -> None:
    connection = Connection(pk=12, provider="apicbase", label="production", tenant_id=3)
    assert str(connection) == "Apicbase (production) connection #12 of tenant 3"


def test_a_provider_no_longer_configured_is_named_by_its_id() -> None:
    assert str(Connection(pk=5, provider="retired", tenant_id=1)) == (
        "retired connection #5 of tenant 1"
    )


def test_a_provider_class_that_fails_to_build_does_not_break_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Any, *args: Any) -> None:
        raise KeyError("a bug in the provider class")

    monkeypatch.setattr(ApicbaseProvider, "__init__", broken)
    assert str(Connection(pk=7, provider="apicbase", tenant_id=2)) == (
        "apicbase connection #7 of tenant 2"
    )

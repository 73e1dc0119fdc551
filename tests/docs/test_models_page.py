"""docs/models.md: the queries shown work, and repr() looks as shown, with no token in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from oauth_connect.models import Connection, ConnectionEvent


def test_models_page(
    run_docs_page: Callable[..., Any],
    make_connection: Callable[..., Connection],
    organisation: Any,
    other_organisation: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    connection = make_connection(access_token="access-token-1", refresh_token="refresh-token-1")
    for kind in ("connected", "refresh_failed", "recovered", "refreshed"):
        ConnectionEvent.objects.create(connection=connection, kind=kind)
    refused = make_connection(label="staging", status=Connection.Status.REAUTH_REQUIRED)
    Connection.objects.create(
        tenant=other_organisation, provider="apicbase", status=Connection.Status.REAUTH_REQUIRED
    )

    run = run_docs_page("models.md", namespace={"organisation": organisation})

    shown = run.output_of("<Connection #1").strip().replace("#1", f"#{connection.pk}")
    assert capsys.readouterr().out.strip() == shown
    assert "access-token-1" not in shown
    assert list(run.namespace["needs_reconnecting"]) == [refused]
    assert run.namespace["latest"] == ["refreshed", "recovered", "refresh_failed"]

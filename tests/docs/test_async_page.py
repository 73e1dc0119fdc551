"""docs/async.md: its samples call the live sandbox's Apicbase through connection.asession(),
from asyncio.run() as a script would, and its view answers as the page says."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import AsyncRequestFactory
from django.utils import timezone

from example_project.sandbox.views import RECIPES
from oauth_connect.models import Connection
from tests.docs.test_services import closed_port_url
from tests.e2e.conftest import Sandbox

pytestmark = pytest.mark.django_db(transaction=True)


def test_async_page(
    run_docs_page: Callable[..., Any],
    sandbox: Sandbox,
    browser: requests.Session,
    organisation: Any,
    user: Any,
    settings: Any,
) -> None:
    sandbox.connect(browser, "apicbase", label="production")
    sandbox.connect(browser, "apicbase")  # the view's: the tenant's connection without a label
    mark = sandbox.mark("apicbase")

    run = run_docs_page("async.md", namespace={"org": organisation})

    ns = run.namespace
    assert ns["names"] == [recipe["name"] for recipe in RECIPES]
    assert ns["renewed"] is True
    assert ns["sentence"].startswith("Apicbase accepted the token")
    assert sandbox.issued_since("apicbase", mark) == 1  # the forced refresh
    production = Connection.objects.get(provider="apicbase", label="production")
    assert async_to_sync(ns["first_bytes"])(production) == b'{"results"'

    request = AsyncRequestFactory().get("/recipes/")
    request.user = user
    response = async_to_sync(ns["recipes"])(request)
    assert (response.status_code, json.loads(response.content)) == (200, {"results": RECIPES})

    # Apicbase's token endpoint down while the token has expired: a 502 saying so.
    Connection.objects.filter(label="").update(expires_at=timezone.now() - timedelta(minutes=1))
    providers = settings.OAUTH_CONNECT["PROVIDERS"]
    providers["apicbase"] = {**providers["apicbase"], "TOKEN_URL": closed_port_url()}
    response = async_to_sync(ns["recipes"])(request)
    assert response.status_code == 502
    assert "Apicbase token endpoint" in json.loads(response.content)["error"]

    Connection.objects.filter(label="").update(status=Connection.Status.REAUTH_REQUIRED)
    request = AsyncRequestFactory().get("/recipes/")
    request.user, request.session = user, {}
    request._messages = FallbackStorage(request)  # type: ignore[attr-defined]
    response = async_to_sync(ns["recipes"])(request)
    assert (response.status_code, response["Location"]) == (302, "/connections/")
    assert [str(message) for message in request._messages] == [  # type: ignore[attr-defined]
        "Apicbase needs you to connect it again."
    ]

"""docs/pages.md: mounting the URLs, a tenant resolver, and restyling the pages, for real."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.conftest import KEY


@pytest.fixture
def page(run_docs_page: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, db: None) -> Any:
    monkeypatch.setenv("OAUTH_CONNECT_KEYS", KEY)
    monkeypatch.setenv("APICBASE_CLIENT_ID", "docs-client-id")
    monkeypatch.setenv("APICBASE_CLIENT_SECRET", "docs-client-secret")
    return run_docs_page("pages.md")


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def site_templates(settings: Any, tmp_path: Path, **templates: str) -> None:
    """Put ``templates`` (name → source) in a directory the template engine searches first."""
    for name, source in templates.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    engine = {**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}
    settings.TEMPLATES = [engine, *settings.TEMPLATES[1:]]


def test_the_urls_and_reverse_work_as_shown(page: Any, user: Any, organisation: Any) -> None:
    assert page.namespace["connections_url"] == "/connections/"
    assert page.namespace["callback_url"] == "/connections/apicbase/callback/"
    client = Client()
    assert client.get("/connections/").url.startswith("/accounts/login/")  # anonymous → LOGIN_URL
    client.force_login(user)
    assert client.get("/admin/").status_code == 302  # the sample kept the admin mounted


def test_the_resolver_picks_the_persons_organisation(
    page: Any, settings: Any, tmp_path: Path, user: Any, organisation: Any
) -> None:
    site_templates(settings, tmp_path, **{"myapp/base.html": page.code_of("· Acme")})
    client = logged_in(user)
    response = client.get("/connections/")
    assert response.status_code == 200
    assert response.context["tenant"] == organisation


def test_a_person_without_an_organisation_is_forbidden_and_told_why(
    page: Any, settings: Any, tmp_path: Path, django_user_model: Any
) -> None:
    site_templates(settings, tmp_path, **{"myapp/base.html": page.code_of("· Acme")})
    client = logged_in(django_user_model.objects.create_user("loner", password="pw"))
    response = client.get("/connections/")
    assert response.status_code == 403
    assert "your account doesn't belong to any organisation yet" in response.content.decode()


def test_the_site_base_template_shows_the_page_and_its_messages(
    page: Any, settings: Any, tmp_path: Path, user: Any, organisation: Any
) -> None:
    site_templates(settings, tmp_path, **{"myapp/base.html": page.code_of("· Acme")})
    client = logged_in(user)
    html = client.get("/connections/").content.decode()
    assert '<nav aria-label="Main"><a href="/">Acme</a></nav>' in html
    assert "Apicbase" in html  # the Connections page's content block, inside the site's base
    html = client.get("/connections/apicbase/callback/?state=stale&code=c", follow=True)
    assert '<p class="message error">' in html.content.decode()


def test_restyling_the_built_in_base_keeps_it_and_adds_the_style(
    page: Any, settings: Any, tmp_path: Path, user: Any, organisation: Any
) -> None:
    site_templates(settings, tmp_path, **{"oauth_connect/base.html": page.code_of("block.super")})
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "BASE_TEMPLATE": "oauth_connect/base.html"}
    client = logged_in(user)
    html = client.get("/connections/").content.decode()
    assert ".oc-badge-active { background: #0969da; }" in html
    assert ".oc-card {" in html  # block.super: the built-in CSS is still there
    assert '<nav><a href="/">Acme</a></nav>' in html

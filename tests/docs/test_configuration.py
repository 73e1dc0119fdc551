"""docs/configuration.md: the reference holds every setting, default and check id the code has
(and none it lacks); its typical configuration passes the checks and does what the page says;
its typo produces exactly the message the page shows; each check's example message is what the
check says."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection as db_connection
from django.db import connections
from django.test import override_settings

import example_project.tenants
import example_project.tenants.models
import example_project.tenants.resolvers
from oauth_connect import checks, conf, crypto
from oauth_connect.models import Connection
from oauth_connect.providers import registry
from oauth_connect.providers.base import Provider
from oauth_connect.providers.oauth2 import OAuth2Provider
from tests.conftest import KEY
from tests.docs.harness import DOCS

PAGE = (DOCS / "configuration.md").read_text()
NEW_KEY = Fernet.generate_key().decode()
OLD_KEY = Fernet.generate_key().decode()


def literal(value: Any) -> str:
    """A default as the page writes it: Python literals, strings in double quotes."""
    return repr(value) if value is None or isinstance(value, bool) else json.dumps(value)


def tables() -> dict[str, list[list[str]]]:
    """Each heading's table rows (header and rule left out), as lists of cells."""
    found: dict[str, list[list[str]]] = {}
    heading = ""
    for line in PAGE.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            found.setdefault(heading, []).append(cells)
    return found


def key_of(row: list[str]) -> str:
    return row[0].strip("`")


def own_settings(cls: type[Provider], parent: type[Provider]) -> dict[str, Any]:
    """The setting keys ``cls`` adds to, or whose default it changes from, ``parent``."""
    return {
        key: value
        for key, value in cls.default_settings.items()
        if key not in parent.default_settings or parent.default_settings[key] != value
    }


def documented_settings() -> dict[str, dict[str, Any]]:
    """Heading of the page → the settings (with defaults) its table must list, from the code."""
    expected: dict[str, dict[str, Any]] = {
        "`OAUTH_CONNECT`": conf.DEFAULTS,
        "Every provider": Provider.default_settings,
        "OAuth2 providers": own_settings(OAuth2Provider, Provider),
    }
    for provider_id in registry.registered_ids():
        cls = registry.provider_class(provider_id)
        if not cls.__module__.startswith("oauth_connect."):
            continue  # registered by a test, not built in
        parent = OAuth2Provider if issubclass(cls, OAuth2Provider) else Provider
        expected[cls.name] = own_settings(cls, parent)
    return expected


CHECK_IDS = set(re.findall(r'id="(oauth_connect\.[EW]\d{3})"', Path(checks.__file__).read_text()))


def test_every_setting_is_on_the_page_with_its_default(settings: Any) -> None:
    found = tables()
    for heading, defaults in documented_settings().items():
        rows = {key_of(row): row for row in found.get(heading, [])}
        assert sorted(rows) == sorted(defaults), f"the table under {heading!r}"
        for key, default in defaults.items():
            assert rows[key][1].startswith(f"`{literal(default)}`"), (heading, key, rows[key][1])
    tenant_model = PAGE.split("## `OAUTH_CONNECT_TENANT_MODEL`")[1].split("\n## ")[0]
    del settings.OAUTH_CONNECT_TENANT_MODEL
    assert conf.tenant_model_label() == settings.AUTH_USER_MODEL
    assert "Default: your `AUTH_USER_MODEL`" in tenant_model
    assert "`oauth_connect.E005`" in tenant_model


def test_every_check_is_on_the_page_and_no_other() -> None:
    assert CHECK_IDS, "no check ids found in oauth_connect/checks.py"
    listed = {row[0].strip("`") for row in tables()["System checks"]}
    assert listed == CHECK_IDS
    short_ids = {check_id.split(".")[1] for check_id in CHECK_IDS}
    mentioned = set(re.findall(r"\b([EW]\d{3})\b", PAGE))
    assert mentioned <= short_ids, (
        f"the page mentions checks that don't exist: {mentioned - short_ids}"
    )


# For each check, settings that trip it: the page's example message must be what it says.
TRIGGERS: dict[str, dict[str, Any]] = {
    "E001": {"OAUTH_CONNECT": None},
    "E002": {"OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY], "PROVIDER": {}}},
    "E003": {"OAUTH_CONNECT": {}},
    "E004": {"OAUTH_CONNECT": {"ENCRYPTION_KEYS": ["secret"]}},
    "E005": {
        "OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY]},
        "OAUTH_CONNECT_TENANT_MODEL": "accounts.Team",
    },
    "E006": {"OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY], "TENANT_RESOLVER": "myapp.tenants.nope"}},
    "E007": {"OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY], "PROVIDERS": {"custobar": None}}},
    "E008": {"OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY], "PROVIDERS": {"globex": {}}}},
    "E009": {
        "OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY], "PROVIDERS": {"teletracker": {"LOGIN": "x"}}}
    },
    "E010": {
        "OAUTH_CONNECT": {
            "ENCRYPTION_KEYS": [KEY],
            "PROVIDERS": {
                "acme": {"TOKEN_URL": "https://acme.test/t", "CLIENT_ID": "i", "CLIENT_SECRET": "s"}
            },
        }
    },
    "E011": {"OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY], "PROVIDERS": {"apicbase": {}}}},
    "E012": {
        "OAUTH_CONNECT": {
            "ENCRYPTION_KEYS": [KEY],
            "PROVIDERS": {
                "apicbase": {"CLIENT_ID": "i", "CLIENT_SECRET": "s", "CLIENT_AUTH": "post"}
            },
        }
    },
    "E013": {
        "OAUTH_CONNECT": {
            "ENCRYPTION_KEYS": [KEY],
            "PROVIDERS": {"custobar": {"BASE_URL": "https://custobar.com/"}},
        }
    },
    "E014": {"OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY], "HTTP_DEADLINE": "15"}},
    "E015": {
        "OAUTH_CONNECT": {"ENCRYPTION_KEYS": [KEY], "CREDENTIAL_THROTTLE": {"CACHE": "throttle"}}
    },
    "W001": {},
}


@pytest.mark.parametrize("row", tables()["System checks"], ids=lambda row: row[0].strip("`"))
def test_each_checks_example_message_is_what_it_says(
    row: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    check_id, message = row[0].strip("`"), row[2].strip("`")
    monkeypatch.setattr(connections["default"], "vendor", "sqlite")  # W001 on any database
    with override_settings(**TRIGGERS[check_id.split(".")[1]]):
        said = [m.msg for m in run_checks(databases=["default"]) if m.id == check_id]
    assert said == [message]


@pytest.fixture
def tenants_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader's ``tenants`` app with the quickstart's resolver: the example project's."""
    monkeypatch.setitem(sys.modules, "tenants", example_project.tenants)
    monkeypatch.setitem(sys.modules, "tenants.models", example_project.tenants.models)
    monkeypatch.setitem(sys.modules, "tenants.resolvers", example_project.tenants.resolvers)


@pytest.mark.django_db
def test_the_typical_configuration_works_and_the_typo_says_what_the_page_shows(
    run_docs_page: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tenants_app: None,
    make_connection: Callable[..., Connection],
) -> None:
    monkeypatch.setenv("OAUTH_CONNECT_KEYS", f"{NEW_KEY},{OLD_KEY}")
    monkeypatch.setenv("APICBASE_CLIENT_ID", "client-id")
    monkeypatch.setenv("APICBASE_CLIENT_SECRET", "client-secret")
    # A token stored before the new key was added, under the old one.
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "ENCRYPTION_KEYS": [OLD_KEY]}
    earlier = make_connection()

    run = run_docs_page("configuration.md")  # the typical configuration passes the checks

    assert conf.encryption_keys() == [NEW_KEY, OLD_KEY]
    assert [p.provider_id for p in registry.configured()] == ["apicbase", "custobar", "teletracker"]
    assert registry.get("apicbase").settings["CLIENT_ID"] == "client-id"
    assert conf.http_timeout() == 20
    assert conf.get("STATE_TTL") == 600  # not set: the default
    # Every key decrypts; the first encrypts what is written.
    connection = Connection.objects.get(pk=earlier.pk)
    assert connection.access_token == "access-token-1"
    connection.access_token = "access-token-2"
    connection.save()
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token FROM oauth_connect_connection WHERE id = %s", [earlier.pk]
        )
        [(stored,)] = cursor.fetchall()
    assert crypto.is_encrypted_with_primary_key(stored)
    assert Fernet(NEW_KEY).decrypt(stored.encode()) == b"access-token-2"

    # The typo: check stops with exactly the message shown.
    settings.OAUTH_CONNECT = run.namespace["OAUTH_CONNECT"]
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    shown = run.output_of("SystemCheckError:")
    assert [line.strip() for line in str(raised.value).strip().splitlines()] == [
        line.strip() for line in shown.strip().splitlines()
    ]

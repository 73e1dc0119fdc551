"""System checks: every misconfiguration gets a stable id and a message that says what to set."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.checks import CheckMessage
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from example_project import settings as example_settings
from oauth_connect.checks import check_settings
from tests.conftest import TOKEN_URL, apicbase_settings, oauth_connect_settings


def only(messages: list[CheckMessage], check_id: str) -> CheckMessage:
    """The one message with ``check_id``, and no message of any other id."""
    assert [message.id for message in messages] == [check_id], messages
    assert messages[0].is_serious()  # an Error: it stops runserver and migrate
    return messages[0]


def text(message: CheckMessage) -> str:
    return f"{message.msg} {message.hint or ''}"


def configure(settings: Any, **overrides: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(**overrides)


def providers(settings: Any, **configured: dict[str, Any]) -> None:
    configure(settings, PROVIDERS=configured)


def test_test_configuration_is_valid() -> None:
    assert check_settings() == []


def test_missing_oauth_connect_setting(settings: Any) -> None:
    del settings.OAUTH_CONNECT

    message = only(check_settings(), "oauth_connect.E001")

    assert "OAUTH_CONNECT" in text(message)
    assert "ENCRYPTION_KEYS" in text(message)


def test_oauth_connect_setting_not_a_dict(settings: Any) -> None:
    settings.OAUTH_CONNECT = ["ENCRYPTION_KEYS"]

    only(check_settings(), "oauth_connect.E001")


def test_unknown_top_level_key(settings: Any) -> None:
    configure(settings, ENCRYPTION_KEY="typo")

    message = only(check_settings(), "oauth_connect.E002")

    assert "ENCRYPTION_KEY" in message.msg
    assert "ENCRYPTION_KEYS" in message.hint


@pytest.mark.parametrize("keys", [[], (), None, ""])
def test_encryption_keys_empty(settings: Any, keys: Any) -> None:
    configure(settings, ENCRYPTION_KEYS=keys)

    message = only(check_settings(), "oauth_connect.E003")

    assert "ENCRYPTION_KEYS" in message.msg
    assert "Fernet.generate_key()" in message.hint


def test_encryption_keys_missing(settings: Any) -> None:
    settings.OAUTH_CONNECT = {
        key: value for key, value in oauth_connect_settings().items() if key != "ENCRYPTION_KEYS"
    }

    only(check_settings(), "oauth_connect.E003")


def test_malformed_encryption_key_is_named_by_position_not_value(settings: Any) -> None:
    good = oauth_connect_settings()["ENCRYPTION_KEYS"][0]
    bad = "not-a-fernet-key-but-maybe-a-secret"
    configure(settings, ENCRYPTION_KEYS=[good, bad])

    message = only(check_settings(), "oauth_connect.E004")

    assert 'OAUTH_CONNECT["ENCRYPTION_KEYS"][1]' in message.msg
    assert "Fernet.generate_key()" in message.hint
    assert bad not in text(message)


def test_tenant_model_not_a_model(settings: Any) -> None:
    settings.OAUTH_CONNECT_TENANT_MODEL = "tenants.Nowhere"

    message = only(check_settings(), "oauth_connect.E005")

    assert "OAUTH_CONNECT_TENANT_MODEL" in message.msg
    assert "tenants.Nowhere" in message.msg
    assert "app_label.ModelName" in message.hint


def test_tenant_model_not_a_label(settings: Any) -> None:
    settings.OAUTH_CONNECT_TENANT_MODEL = "Organisation"

    only(check_settings(), "oauth_connect.E005")


@pytest.mark.parametrize(
    "resolver",
    ["example_project.tenants.resolvers.no_such_function", "no_such_module.resolve", "resolve"],
)
def test_tenant_resolver_not_importable(settings: Any, resolver: str) -> None:
    configure(settings, TENANT_RESOLVER=resolver)

    message = only(check_settings(), "oauth_connect.E006")

    assert "TENANT_RESOLVER" in message.msg
    assert resolver in message.msg


@pytest.mark.parametrize("resolver", [None, 42])
def test_tenant_resolver_not_a_dotted_path(settings: Any, resolver: Any) -> None:
    # e.g. TENANT_RESOLVER = env("TENANT_RESOLVER", default=None): an error, not a crashed check.
    configure(settings, TENANT_RESOLVER=resolver)

    message = only(check_settings(), "oauth_connect.E006")

    assert "TENANT_RESOLVER" in message.msg


def test_unknown_provider_without_urls(settings: Any) -> None:
    providers(settings, apicbase=apicbase_settings(), mystery={"CLIENT_ID": "x"})

    message = only(check_settings(), "oauth_connect.E008")

    assert "mystery" in message.msg
    assert "TOKEN_URL" in message.msg
    assert 'OAUTH_CONNECT["PROVIDERS"]["mystery"]' in message.msg


def test_unknown_key_in_provider_settings(settings: Any) -> None:
    providers(settings, apicbase=apicbase_settings(TOKEN_URLL=TOKEN_URL))

    message = only(check_settings(), "oauth_connect.E009")

    assert 'OAUTH_CONNECT["PROVIDERS"]["apicbase"]' in message.msg
    assert "TOKEN_URLL" in message.msg
    assert re.search(r"\bTOKEN_URL\b", message.hint)


def test_generic_provider_missing_required_urls(settings: Any) -> None:
    providers(
        settings,
        apicbase=apicbase_settings(),
        acme={"TOKEN_URL": "https://acme.test/token", "CLIENT_ID": "id", "CLIENT_SECRET": "s"},
    )

    message = only(check_settings(), "oauth_connect.E010")

    assert 'OAUTH_CONNECT["PROVIDERS"]["acme"]' in message.msg
    assert "AUTHORIZE_URL" in message.msg
    assert "API_URL" in message.msg
    assert "TOKEN_URL" not in message.msg


def test_complete_generic_provider_is_valid(settings: Any) -> None:
    providers(
        settings,
        acme={
            "AUTHORIZE_URL": "https://acme.test/authorize",
            "TOKEN_URL": "https://acme.test/token",
            "API_URL": "https://acme.test/api/",
            "CLIENT_ID": "id",
            "CLIENT_SECRET": "secret",
            "CLIENT_AUTH": "basic",
        },
    )

    assert check_settings() == []


@pytest.mark.parametrize("missing", ["CLIENT_ID", "CLIENT_SECRET"])
def test_provider_without_client_credentials(settings: Any, missing: str) -> None:
    options = apicbase_settings()
    del options[missing]
    providers(settings, apicbase=options)

    message = only(check_settings(), "oauth_connect.E011")

    assert 'OAUTH_CONNECT["PROVIDERS"]["apicbase"]' in message.msg
    assert "CLIENT_ID" in message.msg
    assert "CLIENT_SECRET" in message.msg
    assert "TENANT_CREDENTIALS_ONLY" in message.hint


def test_tenant_credentials_only_needs_no_client_credentials(settings: Any) -> None:
    options = apicbase_settings(TENANT_CREDENTIALS_ONLY=True)
    del options["CLIENT_ID"], options["CLIENT_SECRET"]
    providers(settings, apicbase=options)

    assert check_settings() == []


def test_bad_client_auth(settings: Any) -> None:
    providers(settings, apicbase=apicbase_settings(CLIENT_AUTH="header"))

    message = only(check_settings(), "oauth_connect.E012")

    assert 'OAUTH_CONNECT["PROVIDERS"]["apicbase"]["CLIENT_AUTH"]' in message.msg
    assert '"body"' in message.msg
    assert '"basic"' in message.msg


def test_several_problems_are_all_reported(settings: Any) -> None:
    configure(
        settings,
        ENCRYPTION_KEYS=[],
        TENANT_RESOLVER="nowhere.resolve",
        PROVIDERS={"apicbase": apicbase_settings(CLIENT_AUTH="header", TOKEN_URLL="x")},
    )

    ids = sorted(message.id for message in check_settings())

    assert ids == [
        "oauth_connect.E003",
        "oauth_connect.E006",
        "oauth_connect.E009",
        "oauth_connect.E012",
    ]


def test_manage_py_check_passes_with_example_project_settings(settings: Any) -> None:
    settings.OAUTH_CONNECT = example_settings.OAUTH_CONNECT

    call_command("check")


def test_manage_py_check_runs_our_checks(settings: Any) -> None:
    configure(settings, ENCRYPTION_KEYS=[])

    with pytest.raises(SystemCheckError, match=r"oauth_connect\.E003"):
        call_command("check")


def test_provider_specific_setting_problems_are_reported(settings: Any) -> None:
    settings.OAUTH_CONNECT = {
        **settings.OAUTH_CONNECT,
        "PROVIDERS": {"custobar": {"BASE_URL": "https://custobar.example/"}},
    }
    errors = [m for m in check_settings() if m.id == "oauth_connect.E013"]
    assert len(errors) == 1
    assert "{company}" in errors[0].msg and '["custobar"]["BASE_URL"]' in errors[0].msg


@pytest.mark.parametrize(
    ("overrides", "check_id", "words"),
    [
        ({"HTTP_TIMEOUT": 0}, "oauth_connect.E014", 'OAUTH_CONNECT["HTTP_TIMEOUT"] = 0 must be'),
        ({"HTTP_DEADLINE": -1}, "oauth_connect.E014", "positive number of seconds, or None"),
        ({"HTTP_DEADLINE": True}, "oauth_connect.E014", "HTTP_DEADLINE"),
        ({"MAX_RESPONSE_BYTES": 1.5}, "oauth_connect.E014", "positive whole number of bytes"),
        ({"CREDENTIAL_THROTTLE": 5}, "oauth_connect.E015", "must be a dict, or None"),
        ({"CREDENTIAL_THROTTLE": {"USERS": 5}}, "oauth_connect.E015", "unknown keys: USERS"),
        ({"CREDENTIAL_THROTTLE": {"WINDOW": 0}}, "oauth_connect.E015", '["WINDOW"] must be'),
        ({"CREDENTIAL_THROTTLE": {"CACHE": "nope"}}, "oauth_connect.E015", "not a cache"),
    ],
)
def test_limits_that_would_lift_a_bound_are_errors(
    settings: Any, overrides: dict[str, Any], check_id: str, words: str
) -> None:
    configure(settings, **overrides)
    assert words in text(only(check_settings(), check_id))


@pytest.mark.parametrize(
    "overrides",
    [{"HTTP_DEADLINE": None}, {"HTTP_DEADLINE": 2.5}, {"CREDENTIAL_THROTTLE": None}, {}],
)
def test_valid_limits_pass(settings: Any, overrides: dict[str, Any]) -> None:
    configure(settings, **overrides)
    assert check_settings() == []

from __future__ import annotations

from typing import Any

import pytest

from oauth_connect.exceptions import ConfigurationError
from oauth_connect.providers import OAuth2Provider, Provider, registry
from oauth_connect.providers.apicbase import ApicbaseProvider
from tests.conftest import oauth_connect_settings


class CustomProvider(Provider):
    id = "custom"
    name = "Custom API"


def test_builtin_apicbase_is_registered() -> None:
    assert registry.provider_class("apicbase") is ApicbaseProvider
    assert isinstance(registry.get("apicbase"), OAuth2Provider)


def test_apicbase_defaults_are_the_vendor_endpoints(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": {"CLIENT_ID": "id", "CLIENT_SECRET": "secret"}}
    )
    provider = registry.get("apicbase")
    assert provider.settings["AUTHORIZE_URL"] == "https://app.apicbase.com/oauth/authorize/"
    assert provider.settings["TOKEN_URL"] == "https://api.apicbase.com/oauth/token/"
    assert provider.scopes == ["accounts", "library"]


def test_settings_override_a_builtin_endpoint(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"apicbase": {"TOKEN_URL": "https://proxy.test/token/"}}
    )
    assert registry.get("apicbase").settings["TOKEN_URL"] == "https://proxy.test/token/"


def test_provider_configured_by_settings_only_is_generic_oauth2(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={
            "acme": {
                "AUTHORIZE_URL": "https://acme.test/authorize",
                "TOKEN_URL": "https://acme.test/token",
                "API_URL": "https://acme.test/api/",
                "NAME": "Acme",
            }
        }
    )
    provider = registry.get("acme")
    assert type(provider) is OAuth2Provider
    assert provider.provider_id == "acme"
    assert provider.display_name == "Acme"


def test_register_decorator_and_registered_context() -> None:
    with registry.registered(CustomProvider):
        assert registry.provider_class("custom") is CustomProvider
        assert "custom" in registry.registered_ids()
    with pytest.raises(ConfigurationError):
        registry.provider_class("custom")


def test_class_named_in_settings(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={"mine": {"CLASS": "tests.providers.test_registry.CustomProvider"}}
    )
    assert isinstance(registry.get("mine"), CustomProvider)


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [("tests.providers.nowhere.Provider", "can't be imported"), ("os.path", "subclass")],
)
def test_bad_class_setting_names_the_key(settings: Any, dotted: str, expected: str) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(PROVIDERS={"mine": {"CLASS": dotted}})
    with pytest.raises(ConfigurationError, match=expected) as info:
        registry.get("mine")
    assert 'OAUTH_CONNECT["PROVIDERS"]["mine"]["CLASS"]' in str(info.value)


def test_unknown_provider_says_what_to_configure() -> None:
    with pytest.raises(ConfigurationError, match="AUTHORIZE_URL, TOKEN_URL and API_URL"):
        registry.get("nope")


def test_configured_lists_settings_order(settings: Any) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(
        PROVIDERS={
            "acme": {"AUTHORIZE_URL": "https://a.test/a", "TOKEN_URL": "https://a.test/t"},
            "apicbase": {},
        }
    )
    assert [p.provider_id for p in registry.configured()] == ["acme", "apicbase"]


def test_base_provider_refresh_contract_names_the_subclass() -> None:
    with pytest.raises(NotImplementedError, match="CustomProvider"):
        CustomProvider("custom").refresh(None, None, None)  # type: ignore[arg-type]


def test_missing_required_setting_names_the_key() -> None:
    with pytest.raises(ConfigurationError, match=r'\["custom"\]\["API_URL"\]'):
        CustomProvider("custom", {}).setting("API_URL")

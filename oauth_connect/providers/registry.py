"""Which provider class serves which provider id.

Built-in providers register on import of ``oauth_connect.providers``; third-party code uses
``@register`` or names its class in ``PROVIDERS[id]["CLASS"]``. A ``PROVIDERS`` entry with no
registered class and no ``CLASS`` is served by the generic :class:`OAuth2Provider`, so a standard
OAuth2 API needs settings only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.utils.module_loading import import_string

from .. import conf
from ..exceptions import ConfigurationError
from .base import Provider

P = TypeVar("P", bound=type[Provider])
_classes: dict[str, type[Provider]] = {}


def register(cls: P) -> P:
    """Class decorator: serve provider id ``cls.id`` with ``cls``."""
    _classes[cls.id] = cls
    return cls


def unregister(provider_id: str) -> None:
    _classes.pop(provider_id, None)


@contextmanager
def registered(cls: type[Provider]) -> Iterator[type[Provider]]:
    """Register ``cls`` for the duration of a ``with`` block (for tests)."""
    previous = _classes.get(cls.id)
    register(cls)
    try:
        yield cls
    finally:
        if previous is None:
            unregister(cls.id)
        else:
            _classes[cls.id] = previous


def provider_class(provider_id: str) -> type[Provider]:
    """The class that serves ``provider_id``, or a ``ConfigurationError`` saying what to set."""
    settings = conf.provider_settings(provider_id)
    dotted = settings.get("CLASS")
    if dotted:
        try:
            cls = import_string(dotted)
        except ImportError as err:
            raise ConfigurationError(
                f'OAUTH_CONNECT["PROVIDERS"]["{provider_id}"]["CLASS"] = {dotted!r} can\'t be '
                "imported.",
                provider=provider_id,
            ) from err
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise ConfigurationError(
                f'OAUTH_CONNECT["PROVIDERS"]["{provider_id}"]["CLASS"] must name a subclass of '
                "oauth_connect.providers.base.Provider.",
                provider=provider_id,
            )
        return cls
    if provider_id in _classes:
        return _classes[provider_id]
    if "AUTHORIZE_URL" in settings or "TOKEN_URL" in settings:
        from .oauth2 import OAuth2Provider

        return OAuth2Provider
    raise ConfigurationError(
        f"Unknown provider {provider_id!r}: register a Provider class for it, or configure it in "
        f'OAUTH_CONNECT["PROVIDERS"]["{provider_id}"] with AUTHORIZE_URL, TOKEN_URL and API_URL. '
        f"Built-in providers: {', '.join(sorted(_classes))}.",
        provider=provider_id,
    )


def get(provider_id: str) -> Provider:
    """The provider for ``provider_id``, configured from the settings in force."""
    return provider_class(provider_id)(provider_id, conf.provider_settings(provider_id))


def configured_ids() -> list[str]:
    return conf.configured_provider_ids()


def is_configured(provider_id: str) -> bool:
    return provider_id in conf.configured_provider_ids()


def configured() -> list[Provider]:
    """Every provider in ``OAUTH_CONNECT["PROVIDERS"]``, in settings order."""
    return [get(provider_id) for provider_id in conf.configured_provider_ids()]


def registered_ids() -> list[str]:
    return sorted(_classes)

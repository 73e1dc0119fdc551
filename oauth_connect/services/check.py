"""Test a connection: one cheap authenticated call, as the product would make it."""

from __future__ import annotations

import time

import requests
from django.utils.translation import gettext as _

from ..exceptions import OAuthConnectError, ProviderError, UnsupportedOperation
from ..models import Connection
from ..providers.base import Provider
from ..providers.client import ProviderClient, broken_answer, provider_words
from .credentials import oauth_client_for
from .refresh import refresh_connection, refresh_rejected_token


def can_check(connection: Connection) -> bool:
    """Whether :func:`check_connection` has a way to test this connection's provider."""
    provider = connection.get_provider()
    return bool(provider.settings.get("CHECK_PATH") or provider.settings.get("INTROSPECT_URL"))


def check_connection(connection: Connection) -> str:
    """Test the connection with the provider's ``CHECK_PATH`` (a GET through
    ``connection.session()``) or, without one, its ``INTROSPECT_URL`` (RFC 7662). Returns a
    sentence saying how it went, in the active language (the admin shows it).

    Either way the product's own rules apply: an expiring token is refreshed first, and a
    refused one is refreshed once and tried again, so a connection that passes works for the
    product too. Raises ``UnsupportedOperation`` when the provider has neither setting,
    ``ReauthorizationRequired`` when it refuses the grant (the connection is then
    ``reauth_required``), and ``ProviderError`` for any other failure.
    """
    provider = connection.get_provider()
    path = provider.settings.get("CHECK_PATH")
    started = time.monotonic()
    if path:
        status = _get(connection, provider, str(path))
        sentence = _(
            # Translators: %(path)s is an API path and %(status)d an HTTP status code.
            "%(provider)s accepted the token: GET %(path)s answered HTTP %(status)d (%(ms)d ms)."
        )
        values: dict[str, object] = {"path": path, "status": status}
    elif provider.settings.get("INTROSPECT_URL"):
        _introspect(connection, provider)
        sentence = _(
            "%(provider)s accepted the token: its introspection endpoint calls the token active "
            "(%(ms)d ms)."
        )
        values = {}
    else:
        raise UnsupportedOperation(
            f"There is no cheap call to test {provider.display_name} with: set "
            f'OAUTH_CONNECT["PROVIDERS"]["{provider.provider_id}"]["CHECK_PATH"] to an API '
            'path that needs the token (e.g. "me/"), or its "INTROSPECT_URL".',
            connection=connection,
        )
    elapsed_ms = round((time.monotonic() - started) * 1000)
    return sentence % {**values, "provider": provider.display_name, "ms": elapsed_ms}


def _get(connection: Connection, provider: Provider, path: str) -> int:
    name = provider.display_name
    try:
        with connection.session() as session:
            # A redirect (to a login page, say) is not the API accepting the token. Only the
            # status matters: the body, however big, is never read.
            response = session.get(path, allow_redirects=False, stream=True)
            response.close()
    except OAuthConnectError:
        raise  # a refresh that failed says so itself (ours are requests.HTTPErrors too)
    except requests.RequestException as err:
        # Not chained (from None): the error's text can quote the API's bytes, and an API that
        # echoes the request would put the token there. Ours carries it through provider_words.
        reason = provider_words(f"{type(err).__name__}: {err}", [connection.access_token])
        if broken_answer(err):
            raise ProviderError(
                f"{name} broke off or garbled its answer to GET {path} ({reason}). This is "
                "usually temporary.",
                connection=connection,
            ) from None
        raise ProviderError(
            f"Could not reach {name} for GET {path} ({reason}). Check the network and the API "
            "URL; this is usually temporary.",
            connection=connection,
        ) from None
    status = response.status_code
    if status in provider.expired_token_statuses:
        raise ProviderError(
            f"{name} refused the token (HTTP {status} to GET {path}). If a refresh was possible "
            "it was made and refused too: the access granted may not cover this call. "
            "Reconnect and grant it, or set CHECK_PATH to a call it covers.",
            connection=connection,
            status_code=status,
        )
    if not 200 <= status < 300:
        raise ProviderError(
            f"{name} answered HTTP {status} to GET {path}. A 5xx is usually temporary; "
            "otherwise check CHECK_PATH.",
            connection=connection,
            status_code=status,
        )
    return status


def _introspect(connection: Connection, provider: Provider) -> None:
    refresh_connection(connection)  # an expiring token first, as a session would
    client = ProviderClient(provider.provider_id, connection=connection)
    oauth_client = oauth_client_for(provider, connection.tenant_id, issued_to=connection.client_id)

    def active() -> bool | None:
        return provider.introspect(client, connection, oauth_client)

    if active():
        return
    refresh_rejected_token(connection, connection.access_token)
    if not active():
        raise ProviderError(
            f"{provider.display_name} calls the access token inactive, even after a refresh. "
            "Reconnect to grant access again.",
            connection=connection,
        )

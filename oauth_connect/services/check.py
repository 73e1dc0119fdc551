"""Test a connection: one cheap authenticated call, as the product would make it."""

from __future__ import annotations

import time

from ..exceptions import ProviderError, UnsupportedOperation
from ..models import Connection


def check_connection(connection: Connection) -> str:
    """GET the provider's ``CHECK_PATH`` through ``connection.session()`` and say how it went.

    The call takes the product's own path: an expiring token is refreshed first, and a 401 is
    refreshed once and retried, so a connection that passes works for the product too. Raises
    ``UnsupportedOperation`` when no ``CHECK_PATH`` is set, ``ReauthorizationRequired`` when the
    provider refuses the grant (the connection is then ``reauth_required``), and
    ``ProviderError`` when the API answers with an error.
    """
    provider = connection.get_provider()
    path = provider.settings.get("CHECK_PATH")
    if not path:
        raise UnsupportedOperation(
            f"There is no cheap call to test {provider.display_name} with: set "
            f'OAUTH_CONNECT["PROVIDERS"]["{provider.provider_id}"]["CHECK_PATH"] to an API '
            'path that needs the token (e.g. "me/").',
            connection=connection,
        )
    started = time.monotonic()
    with connection.session() as session:
        response = session.get(path)
    elapsed_ms = (time.monotonic() - started) * 1000
    status = response.status_code
    if status in provider.expired_token_statuses:
        raise ProviderError(
            f"{provider.display_name} refused the token (HTTP {status} to GET {path}) even "
            "after it was refreshed: the access granted may not cover this call. Reconnect and "
            "grant it, or set CHECK_PATH to a call it covers.",
            connection=connection,
            status_code=status,
        )
    if not response.ok:
        raise ProviderError(
            f"{provider.display_name} answered HTTP {status} to GET {path}. A 5xx is usually "
            "temporary; otherwise check CHECK_PATH.",
            connection=connection,
            status_code=status,
        )
    return (
        f"{provider.display_name} accepted the token: GET {path} answered HTTP "
        f"{status} in {elapsed_ms:.0f} ms."
    )

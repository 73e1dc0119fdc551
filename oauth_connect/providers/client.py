"""``ProviderClient``: how a provider talks to its own auth endpoints (token, login, revoke).

Providers describe requests and parse answers; this class sends them, once, with a timeout, and
turns every way a provider can fail into an :class:`~oauth_connect.exceptions.ProviderError`
subclass with a message a person can act on. It never puts a secret in that message.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .. import conf
from .._internal.http import shared_session
from .._internal.redact import redact, secret_values
from ..exceptions import (
    ProviderConfigurationError,
    ProviderError,
    ReauthorizationRequired,
)

if TYPE_CHECKING:
    from ..models import Connection


# OAuth2 error codes (RFC 6749 §5.2) that mean the grant itself is dead: a person must reconnect.
DEAD_GRANT_ERRORS = frozenset({"invalid_grant"})
# ... and those that mean our client id/secret is wrong: an operator must fix configuration.
BAD_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
MAX_DESCRIPTION = 300


class ProviderClient:
    """Sends requests for one provider (and optionally one connection) and returns JSON bodies."""

    def __init__(
        self,
        provider_id: str,
        *,
        connection: Connection | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.provider_id = provider_id
        self.connection = connection
        self.session = session or shared_session()

    @sensitive_variables()
    def post_form(
        self,
        url: str,
        data: dict[str, Any],
        *,
        auth: tuple[str, str] | None = None,
        what: str = "token endpoint",
        refused: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """POST ``data`` form-encoded and return the JSON object the provider answered.

        ``refused`` lists statuses with which this endpoint says "those credentials (or that
        grant) are no good": they raise ``ReauthorizationRequired`` whatever the body says.
        """
        secrets = [*secret_values(data), *(auth or ())]
        response = self._send("POST", url, what, secrets, data=data, auth=auth)
        return self._json(response, what, secrets, refused)

    @sensitive_variables()
    def request_json(
        self,
        method: str,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        what: str = "endpoint",
        refused: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """Send a bodyless request (e.g. GET with HTTP basic) and return the JSON object."""
        secrets = list(auth or ())
        response = self._send(method, url, what, secrets, auth=auth)
        return self._json(response, what, secrets, refused)

    @sensitive_variables()
    def send(self, method: str, url: str, *, what: str, secrets: list[str], **kwargs: Any) -> Any:
        """Send a request and return the response, whatever its status (network errors raise)."""
        return self._send(method, url, what, secrets, **kwargs)

    # Internals ---------------------------------------------------------------------------------

    def _where(self, what: str, url: str) -> str:
        host = urlsplit(url).netloc or url
        return f"the {self.provider_id} {what} ({host})"

    def _error(self, cls: type[ProviderError], message: str, **kwargs: Any) -> ProviderError:
        return cls(message, connection=self.connection, provider=self.provider_id, **kwargs)

    @sensitive_variables()
    def _send(
        self, method: str, url: str, what: str, secrets: list[str], **kwargs: Any
    ) -> requests.Response:
        try:
            # No redirects: a 307/308 would re-send the form (client secret, refresh token) to
            # wherever Location points. A redirect surfaces as an error naming the status.
            return self.session.request(
                method, url, timeout=conf.http_timeout(), allow_redirects=False, **kwargs
            )
        except requests.Timeout as err:
            raise self._error(
                ProviderError,
                f"{self._where(what, url)} did not answer within {conf.http_timeout():g} seconds. "
                "This is usually temporary; it will be retried.",
            ) from err
        except requests.RequestException as err:
            reason = redact(type(err).__name__, secrets)
            raise self._error(
                ProviderError,
                f"Could not reach {self._where(what, url)} ({reason}). Check the URL in "
                f'OAUTH_CONNECT["PROVIDERS"]["{self.provider_id}"] and the network.',
            ) from err

    def _json(
        self,
        response: requests.Response,
        what: str,
        secrets: list[str],
        refused: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        where = self._where(what, response.url or "")
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        # Only an answer in the API's own words is a refusal: an HTML error page from a proxy
        # with the same status is an outage, and must not cost the tenant their connection.
        if status in refused and isinstance(body, dict):
            raise self._error(
                ReauthorizationRequired,
                f"{where} refused the credentials (HTTP {status}).",
                status_code=status,
            )
        if not isinstance(body, dict):
            content_type = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise self._error(
                ProviderError,
                f"{where} answered HTTP {status} with a body that is not a JSON object "
                f"({content_type}).",
                status_code=status,
                retry_after=_retry_after(response),
            )
        if status >= 400 or "error" in body:
            raise self._oauth_error(body, status, where, secrets, _retry_after(response))
        return body

    def _oauth_error(
        self,
        body: dict[str, Any],
        status: int,
        where: str,
        secrets: list[str],
        retry_after: float | None,
    ) -> ProviderError:
        # Redact before cutting: a cut through a secret would leave its start unmasked.
        code = redact(str(body.get("error") or "").strip(), secrets)[:100] or None
        description = str(body.get("error_description") or body.get("message") or "")
        description = redact(description, secrets)[:MAX_DESCRIPTION]
        said = f"{code}: {description}" if code and description else (code or description)
        said = f" ({said})" if said else ""
        kwargs = {"status_code": status, "error_code": code, "retry_after": retry_after}
        if code in DEAD_GRANT_ERRORS:
            return self._error(
                ReauthorizationRequired,
                f"{where} refused the stored grant{said}. Someone must reconnect.",
                **kwargs,
            )
        if code in BAD_CLIENT_ERRORS:
            return self._error(
                ProviderConfigurationError,
                f"{where} rejected our client credentials{said}. An operator must fix CLIENT_ID/"
                f'CLIENT_SECRET in OAUTH_CONNECT["PROVIDERS"]["{self.provider_id}"] or the '
                "tenant's client credentials.",
                **kwargs,
            )
        return self._error(ProviderError, f"{where} answered HTTP {status}{said}.", **kwargs)


def _retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 allows seconds or an HTTP date), if the provider sent
    one on a 429 or 503."""
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max((parsedate_to_datetime(value) - timezone.now()).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None

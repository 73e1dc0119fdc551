"""``ProviderClient``: how a provider talks to its own auth endpoints (token, login, revoke).

Providers describe requests and parse answers; this class sends them and is the one place that
treats the answer as hostile input. Every call here:

- ends within the client's deadline (``HTTP_DEADLINE``, shared by all the calls one operation
  makes), however slowly the provider drips its answer (``_internal.deadline`` cuts it off);
- reads at most ``MAX_RESPONSE_BYTES`` of body, as a stream, compressed bodies included;
- parses JSON with its nesting guarded, and only a JSON object counts as an answer;
- turns every way a provider can fail into a :class:`~oauth_connect.exceptions.ProviderError`
  subclass naming the provider (and the connection, when there is one), with a message a
  person can act on and never a secret: the provider's own words go through
  :func:`~oauth_connect._internal.redact.provider_words`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from urllib3.exceptions import ProtocolError

from .. import conf
from .._internal.basic_auth import BasicAuth, basic_auth_secrets, basic_authorization
from .._internal.bounded_body import ACCEPT_ENCODING, BodyRefused, read_bounded
from .._internal.deadline import Deadline, deadline_scope
from .._internal.http import ends_at_close, shared_session
from .._internal.redact import provider_words, secret_values
from ..exceptions import (
    DeadlineExceeded,
    OAuthConnectError,
    ProviderConfigurationError,
    ProviderError,
    ReauthorizationRequired,
    UnusableAnswer,
)

if TYPE_CHECKING:
    from ..models import Connection

# provider_words is public here: a provider class puts what its provider said in its own errors
# through it (docs/providers/writing-a-provider.md).
__all__ = ["Answer", "ProviderClient", "broken_answer", "provider_words"]


# OAuth2 error codes (RFC 6749 §5.2) that mean the grant itself is dead: a person must reconnect.
DEAD_GRANT_ERRORS = frozenset({"invalid_grant"})
# ... and those that mean our client id/secret is wrong: an operator must fix configuration.
BAD_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


@dataclass(frozen=True)
class Answer:
    """A provider's answer, read in full (and within bounds)."""

    status_code: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    url: str = ""


class ProviderClient:
    """Sends requests for one provider (and optionally one connection) and returns JSON bodies.

    Make one per operation (a refresh, a login, a code exchange, a revocation): its deadline
    starts with its first call and covers every call it makes.
    """

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
        self.deadline: Deadline | None = None
        self._known: set[str] = set()
        self._knows_connection = False

    def __repr__(self) -> str:
        return f"<ProviderClient {self.provider_id!r}>"

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
        answer = self._send("POST", url, what, secret_values(data), data=data, auth=auth)
        return self._json(answer, what, refused)

    @sensitive_variables()
    def request_json(
        self,
        method: str,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        secrets: list[str] | None = None,
        what: str = "endpoint",
        refused: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """Send a bodyless request (e.g. GET with HTTP basic, or with a bearer token in
        ``headers`` whose ``secrets`` are masked in any error) and return the JSON object."""
        answer = self._send(method, url, what, list(secrets or []), auth=auth, headers=headers)
        return self._json(answer, what, refused)

    @sensitive_variables()
    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        secrets: list[str],
        data: dict[str, Any] | None = None,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Send a request and return the answer, whatever its status (network errors raise)."""
        sent = [*secrets, *secret_values(data)]
        return self._send(method, url, what, sent, data=data, auth=auth, headers=headers)

    @sensitive_variables()
    def _remember(self, sent: list[str], auth: tuple[str, str] | None) -> None:
        """Note the secrets a call sends: the operation's later calls mask them too (a fallback
        login's error may quote the refresh token refused a moment before)."""
        self._known.update(value for value in [*sent, *basic_auth_secrets(auth)] if value)

    @sensitive_variables()
    def _secrets(self) -> list[str]:
        """What a provider might echo, to mask in what it says: whatever this operation sent,
        and the connection's own tokens and password. Asked on error paths only, so a call that
        goes well decrypts nothing it doesn't send."""
        if self.connection is not None and not self._knows_connection:
            self._knows_connection = True
            self._known.update(_connection_secrets(self.connection))
        return list(self._known)

    def words(self, value: object, limit: int) -> str:
        """What the provider said (``value``), fit for people to read, with every secret this
        operation sent or holds masked (``provider_words``)."""
        return provider_words(value, self._secrets(), limit)

    def where(self, what: str, url: str) -> str:
        """``the Apicbase token endpoint (api.apicbase.com)``: for messages, with the provider
        spelled as the pages and the admin spell it."""
        host = urlsplit(url).netloc or url
        return f"the {_display_name(self.provider_id)} {what} ({host})"

    def error(self, cls: type[ProviderError], message: str, **kwargs: Any) -> ProviderError:
        """A ``cls`` naming this client's provider and connection."""
        return cls(message, connection=self.connection, provider=self.provider_id, **kwargs)

    # Sending -----------------------------------------------------------------------------------

    @sensitive_variables()
    def _send(
        self,
        method: str,
        url: str,
        what: str,
        sent: list[str],
        *,
        data: dict[str, Any] | None = None,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request within the deadline; ``sent`` are the secrets it carries."""
        self._remember(sent, auth)
        where = self.where(what, url)
        if self.deadline is None:
            self.deadline = Deadline(conf.http_deadline())
        deadline = self.deadline
        if deadline.remaining() <= 0:
            raise self._too_slow(where)
        basic = BasicAuth(basic_authorization(*auth) if auth is not None else None)
        try:
            with deadline_scope(deadline):
                # No redirects: a 307/308 would re-send the form (client secret, refresh token)
                # to wherever Location points. A redirect surfaces as an error naming the status.
                response = self.session.request(
                    method,
                    url,
                    data=data,
                    headers={**(headers or {}), "Accept-Encoding": ACCEPT_ENCODING},
                    auth=basic,
                    timeout=min(conf.http_timeout(), max(deadline.remaining(), 0.01)),
                    allow_redirects=False,
                    stream=True,
                )
                try:
                    body = self._read(response, where)
                finally:
                    response.close()
        except OAuthConnectError:
            raise
        except Exception as err:
            # Whatever broke (the network, the provider's framing, its encoding), the error is
            # not chained (from None): its text can quote the provider's bytes, and so a secret
            # the provider echoes. The message carries that text through provider_words.
            if deadline.passed:
                raise self._too_slow(where) from None
            if isinstance(err, (requests.Timeout, urllib3.exceptions.TimeoutError)):
                raise self.error(
                    ProviderError,
                    f"{where} did not answer within {conf.http_timeout():g} seconds "
                    "(HTTP_TIMEOUT). This is usually temporary.",
                ) from None
            reason = provider_words(f"{type(err).__name__}: {err}", self._secrets())
            if broken_answer(err):
                raise self.error(
                    ProviderError,
                    f"{where} broke off or garbled its answer ({reason}). This is usually "
                    "temporary.",
                ) from None
            raise self.error(
                ProviderError,
                f"Could not reach {where} ({reason}). Check the URL in "
                f'OAUTH_CONNECT["PROVIDERS"]["{self.provider_id}"] and the network.',
            ) from None
        if deadline.passed and ends_at_close(response):
            # Cut while the body had no length: to http.client the shut socket looked like the
            # end of the answer. What was read is a fragment, whatever it parses as. (A framed
            # body read in full just as the deadline passed is whole: at a rotating provider,
            # throwing it away would lose the rotation.)
            raise self._too_slow(where)
        return Answer(response.status_code, response.headers, body, url)

    def _too_slow(self, where: str) -> ProviderError:
        seconds = self.deadline.seconds if self.deadline else conf.http_deadline()
        return self.error(
            DeadlineExceeded,
            f"{where} did not finish answering within {seconds:g} seconds (HTTP_DEADLINE), so "
            "the call was cut off. This is usually temporary.",
        )

    def _read(self, response: requests.Response, where: str) -> bytes:
        """The body, at most ``MAX_RESPONSE_BYTES`` of it once decoded, read as a stream."""
        limit = conf.max_response_bytes()
        try:
            return read_bounded(response, limit)
        except BodyRefused as refused:
            encoding = provider_words(response.headers.get("Content-Encoding"), self._secrets(), 40)
            message = {
                "too big": f"answered with more than {limit:,} bytes (MAX_RESPONSE_BYTES); "
                "nothing of it was used",
                "encoding": f"answered in an encoding we did not ask for ({encoding})",
                "undecodable": "answered with a compressed body that does not decompress",
            }[refused.reason]
            raise self.error(
                UnusableAnswer, f"{where} {message}.", status_code=response.status_code
            ) from None

    # Reading ------------------------------------------------------------------------------------

    def _json(
        self, answer: Answer, what: str, refused: frozenset[int] = frozenset()
    ) -> dict[str, Any]:
        where = self.where(what, answer.url)
        status = answer.status_code
        body = _parse_json(answer.body)
        # Only an answer in the API's own words is a refusal: an HTML error page from a proxy
        # with the same status is an outage, and must not cost the tenant their connection.
        if status in refused and isinstance(body, dict):
            raise self.error(
                ReauthorizationRequired,
                f"{where} refused the credentials (HTTP {status}).",
                status_code=status,
            )
        if not isinstance(body, dict):
            content_type = answer.headers.get("Content-Type") or "no content type"
            content_type = provider_words(content_type.split(";")[0], self._secrets(), 60)
            raise self.error(
                UnusableAnswer if status < 300 else ProviderError,
                f"{where} answered HTTP {status} with a body that is not a JSON object "
                f"({content_type}).",
                status_code=status,
                retry_after=_retry_after(answer),
            )
        if status >= 300 or "error" in body:
            raise self._oauth_error(body, status, where, self._secrets(), _retry_after(answer))
        return body

    def _oauth_error(
        self,
        body: dict[str, Any],
        status: int,
        where: str,
        secrets: list[str],
        retry_after: float | None,
    ) -> ProviderError:
        code = provider_words(body.get("error"), secrets, limit=100) or None
        description = provider_words(
            body.get("error_description") or body.get("message") or body.get("detail"), secrets
        )
        said = f"{code}: {description}" if code and description else (code or description)
        said = f" ({said})" if said else ""
        kwargs = {"status_code": status, "error_code": code, "retry_after": retry_after}
        if code in DEAD_GRANT_ERRORS:
            return self.error(
                ReauthorizationRequired,
                f"{where} refused the stored grant{said}. Someone must reconnect.",
                **kwargs,
            )
        if code in BAD_CLIENT_ERRORS:
            return self.error(
                ProviderConfigurationError,
                f"{where} rejected our client credentials{said}. An operator must fix CLIENT_ID/"
                f'CLIENT_SECRET in OAUTH_CONNECT["PROVIDERS"]["{self.provider_id}"] or the '
                "tenant's client credentials.",
                **kwargs,
            )
        return self.error(ProviderError, f"{where} answered HTTP {status}{said}.", **kwargs)


def broken_answer(err: Exception) -> bool:
    """Whether ``err`` says the provider was reached but its answer was not proper HTTP (cut
    short, too many headers, a bad chunk), rather than that it could not be reached."""
    if isinstance(err, (HTTPException, ProtocolError, requests.exceptions.ChunkedEncodingError)):
        return True
    wrapped = err.args[0] if isinstance(err, requests.ConnectionError) and err.args else None
    return isinstance(wrapped, ProtocolError)


def _parse_json(body: bytes) -> Any:
    """The JSON value of ``body``, or None when it is not JSON. Nesting deep enough to exhaust
    the parser's recursion, odd encodings and bad numbers are all just "not JSON"."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _connection_secrets(connection: Connection) -> list[str]:
    """The connection's tokens and kept password, as far as they can be read."""
    values = []
    for read in (
        lambda: connection.access_token,
        lambda: connection.refresh_token,
        lambda: connection.stored_credential("password"),
    ):
        try:
            values.append(read())
        except (OAuthConnectError, ValueError):  # a key gone, kept credentials unreadable
            continue
    return [value for value in values if value]


def _retry_after(answer: Answer) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 allows seconds or an HTTP date), if the provider sent
    one on a 429 or 503."""
    if answer.status_code not in (429, 503):
        return None
    value = (answer.headers.get("Retry-After") or "").strip()
    if not value or len(value) > 64:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        return max((parsedate_to_datetime(value) - timezone.now()).total_seconds(), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None


def _display_name(provider_id: str) -> str:
    """The provider's name for people; its id if it can't be built (a message must not fail)."""
    from .registry import get  # the registry builds providers, which use this module

    try:
        return get(provider_id).display_name
    except Exception:
        return provider_id

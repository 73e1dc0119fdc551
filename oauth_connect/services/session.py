"""``connection.session()``: a ``requests.Session`` that authenticates as a connection.

Per request it costs one datetime comparison while the token is valid: no database query, no
decryption (the token is decrypted once, when the session is made). It refreshes before sending
when the token is about to expire, and on an "expired token" answer (401, or whatever the
provider declares) refreshes once and retries once.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import requests.auth
from django.utils import timezone

from .. import conf
from .._internal.deadline import Deadline, deadline_scope
from .._internal.http import TimeoutSession, ends_at_close
from .._internal.log import connection_fields, logger
from ..exceptions import (
    ConnectionBusy,
    ConnectionUnavailable,
    DeadlineExceeded,
    ProviderError,
    ReauthorizationRequired,
    TokensNotStored,
    UnsafeURLError,
)
from ..models import Connection
from .refresh import needs_reauth_message, refresh_connection, refresh_rejected_token
from .validation import sendable_token


class _Default:
    """Stands for "the setting in force", where ``None`` is a value callers choose (no
    deadline)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def connection_session(
    connection: Connection, *, timeout: float | None = None, deadline: float | None = DEFAULT
) -> ConnectionSession:
    """A session for ``connection``; raises at once if it can't be used as it stands.

    ``timeout`` bounds each socket operation (default ``HTTP_TIMEOUT``); ``deadline`` each
    whole request, however slowly the API answers (default ``HTTP_DEADLINE``; None: no
    deadline, e.g. for a long download). ``session.get(url, deadline=120)`` sets it for one
    request. With ``stream=True`` it covers the request up to the response's headers."""
    if connection.status == Connection.Status.DISCONNECTED:
        raise ConnectionUnavailable(
            "It is disconnected. Connect it again from the Connections page.",
            connection=connection,
        )
    if connection.status == Connection.Status.REAUTH_REQUIRED:
        raise ReauthorizationRequired(needs_reauth_message(connection), connection=connection)
    return ConnectionSession(connection, timeout=timeout, deadline=deadline)


class ConnectionSession(TimeoutSession):
    """Relative URLs (with or without a leading slash) are appended to the provider's API URL.
    Absolute URLs must point at the API's own scheme, host and port: the token is never sent
    anywhere else. One session per thread, as with any ``requests.Session``. A request body
    that is a stream or an open file can't be sent twice, so it is not retried after a 401."""

    #: When (time.time()) to try a refresh before sending; None: no expiry known.
    _refresh_at: float | None

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float | None = None,
        deadline: float | None = DEFAULT,
    ) -> None:
        super().__init__(timeout)
        self.deadline = conf.http_deadline() if deadline is DEFAULT else deadline
        self.connection = connection
        self.provider = connection.get_provider()
        base = self.provider.api_base_url(connection)
        self.base_url = base if base.endswith("/") else base + "/"
        self._origin = _origin(self.base_url)
        self._leeway = conf.refresh_leeway()
        # An auth object, not just a default header: without one, requests looks up ~/.netrc
        # on every call, and an entry for the API's host would replace the tenant's token.
        self.auth = _ConnectionAuth(self)
        self._use_stored_token()

    def __repr__(self) -> str:
        return f"<ConnectionSession for {self.connection!r}>"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        deadline = kwargs.pop("deadline", self.deadline)
        url = self._resolve(url if isinstance(url, str) else url.decode())
        # A float comparison: the hot path builds no datetime (time-machine patches time.time).
        if self._refresh_at is not None and time.time() >= self._refresh_at:
            self._refresh_ahead_of_expiry()
        if not self._sendable:
            # Stored before tokens were checked on arrival, and unfit for a header (CR/LF...):
            # to the API it would be a refused token, so get a new one the same way, unless
            # renewing is backing off after failing (then not on every request).
            if self._backing_off():
                raise ProviderError(
                    "Its stored access token can't be sent in an HTTP header, and renewing it "
                    f"failed ({self.connection.last_error}); the next try is after "
                    f"{self.connection.retry_not_before:%Y-%m-%d %H:%M:%S %Z}.",
                    connection=self.connection,
                )
            self._refresh_rejected()
        resendable = _resendable(kwargs)
        response, retry = self._send(deadline, resendable, method, url, *args, **kwargs)
        if retry:
            response.close()  # first: its connection is of no more use, and its body unread
            self._refresh_rejected()
            response, _retry = self._send(deadline, False, method, url, *args, **kwargs)
        return response

    def _send(
        self, deadline: float | None, resendable: bool, *args: Any, **kwargs: Any
    ) -> tuple[Any, bool]:
        """One request, and whether to refresh and send it again (the API refused the token,
        and neither the body nor the backoff forbids it). Its body is read within
        ``deadline`` (unless the caller streams it), but never that of an answer to be sent
        again: a 401 may be 256 MiB."""
        streamed = kwargs.get("stream", False)
        kwargs["stream"] = True
        limit = Deadline(deadline) if deadline is not None else None
        try:
            with deadline_scope(limit) if limit is not None else nullcontext():
                response = super().request(*args, **kwargs)
                retry = (
                    resendable
                    and response.status_code in self.provider.expired_token_statuses
                    and not self._backing_off()
                )
                if not (streamed or retry):
                    response.content  # noqa: B018 - read now, within the deadline
        except requests.RequestException:
            if limit is None or not limit.passed:
                raise
            # Not chained: the cut's error can quote the API's bytes (which may echo the token).
            raise self._too_slow(limit.seconds) from None
        if limit is not None and limit.passed and (streamed or ends_at_close(response)):
            # Cut, though it looks whole: a body that only the close ends is a fragment, and a
            # streamed one would be read from a shut socket.
            response.close()
            raise self._too_slow(limit.seconds)
        return response, retry

    def _too_slow(self, deadline: float) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"The {self.provider.display_name} API did not finish answering within "
            f"{deadline:g} seconds, so the request was cut off. Pass deadline= for a longer "
            "request (None: no deadline).",
            connection=self.connection,
        )

    def _refresh_rejected(self) -> None:
        try:
            refresh_rejected_token(self.connection, self._access_token)
        except TokensNotStored:
            self._carry_on_unstored()
        self._use_stored_token()
        if not self._sendable:
            raise ConnectionUnavailable(
                "Its stored access token can't be sent in an HTTP header, and no new one could "
                "be had. Reconnect it from the Connections page.",
                connection=self.connection,
            )

    def get_redirect_target(self, response: requests.Response) -> str | None:
        """Redirects are followed within the API's origin only. A redirect elsewhere comes back
        to the caller as the 3xx it is: a provider must not make this server fetch other hosts
        (an internal address, say) and hand the answer to the product as the API's."""
        target: str | None = super().get_redirect_target(response)
        if target is None or _origin(urljoin(response.url, target)) != self._origin:
            return None
        return target

    def _backing_off(self) -> bool:
        # After a failed refresh, hand the provider's refusal back as it is until the backoff
        # ends, instead of calling the token endpoint on every request.
        retry_at = self.connection.retry_not_before
        return retry_at is not None and retry_at > timezone.now()

    def _refresh_ahead_of_expiry(self) -> None:
        """Best effort while the token still works: a provider outage (or its backoff) must not
        fail requests the current token can still make. Once it has expired, failures raise."""
        expires_at = self.connection.expires_at
        still_valid = expires_at is not None and expires_at > timezone.now()
        if still_valid and self._backing_off():
            return
        if (
            expires_at is not None
            and still_valid
            and not self.provider.can_refresh(self.connection)
        ):
            # Nothing to refresh with: use the token until it expires, then let the refresh
            # say so, instead of taking the row lock on every request meanwhile.
            self._refresh_at = expires_at.timestamp()
            return
        try:
            refresh_connection(self.connection, due_within=self._leeway)
        except TokensNotStored:
            self._carry_on_unstored()
        except ReauthorizationRequired:
            raise
        except (ProviderError, ConnectionBusy) as err:
            if not still_valid:
                raise
            logger.warning(
                "%s: refresh ahead of expiry failed; using the current token meanwhile: %s",
                self.connection,
                err.detail,
                extra=connection_fields(self.connection, "early_refresh_failed"),
            )
        self._use_stored_token()

    def _carry_on_unstored(self) -> None:
        # The new tokens exist only in this process now (already logged and marked): use them
        # rather than fail the request, which the old, rotated-away token can't make.
        logger.warning(
            "%s: using tokens that could not be stored",
            self.connection,
            extra=connection_fields(self.connection, "using_unstored_tokens"),
        )

    def _use_stored_token(self) -> None:
        self._access_token = self.connection.access_token
        expires_at: datetime | None = self.connection.expires_at
        margin = self.connection.refresh_margin(self._leeway)
        self._refresh_at = (expires_at - margin).timestamp() if expires_at is not None else None
        self._sendable = sendable_token(self._access_token)
        # Never built from a token a header can't carry: requests' error would quote it.
        self._authorization = (
            self.provider.authorization_header(self._access_token) if self._sendable else ""
        )

    def _resolve(self, url: str) -> str:
        # Relative paths are appended to the API URL (plain concatenation: the hot path).
        if "://" not in url or not urlsplit(url).scheme:
            return self.base_url + url.lstrip("/")
        if _origin(url) != self._origin:
            raise UnsafeURLError(
                f"It only sends its token to {self._origin}; refusing "
                f"{_origin(url)}. Use a plain requests session for other hosts.",
                connection=self.connection,
            )
        return url


class _ConnectionAuth(requests.auth.AuthBase):
    """Puts the session's current token on each request (requests drops it on a redirect to
    another host)."""

    def __init__(self, session: ConnectionSession) -> None:
        self.session = session

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.session._authorization
        return request


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _resendable(kwargs: dict[str, Any]) -> bool:
    """Whether the request can be sent a second time: a stream or file was consumed by the
    first attempt, and resending it would send an empty body."""
    body = kwargs.get("data")
    if not (body is None or isinstance(body, (str, bytes, dict, list, tuple))):
        return False
    files = kwargs.get("files") or {}
    values = files.values() if isinstance(files, dict) else [value for _, value in files]
    for value in values:
        content = value[1] if isinstance(value, (tuple, list)) and len(value) > 1 else value
        if hasattr(content, "read"):
            return False
    return True

"""``connection.session()``: a ``requests.Session`` that authenticates as a connection.

Per request it costs one datetime comparison while the token is valid: no database query, no
decryption (the token is decrypted once, when the session is made). It refreshes before sending
when the token is about to expire, and on an "expired token" answer (401, or whatever the
provider declares) refreshes once and retries once.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any
from urllib.parse import urljoin

import requests
import requests.auth

from .._internal.deadline import Deadline, deadline_scope
from .._internal.http import TimeoutSession, ends_at_close
from ..models import Connection
from .session_tokens import DEFAULT, SessionTokens, origin_of, raise_unless_usable


def connection_session(
    connection: Connection, *, timeout: float | None = None, deadline: float | None = DEFAULT
) -> ConnectionSession:
    """A session for ``connection``; raises at once if it can't be used as it stands.

    ``timeout`` bounds each socket operation (default ``HTTP_TIMEOUT``); ``deadline`` each
    whole request, however slowly the API answers (default ``HTTP_DEADLINE``; None: no
    deadline, e.g. for a long download). ``session.get(url, deadline=120)`` sets it for one
    request. With ``stream=True`` it covers the request up to the response's headers."""
    raise_unless_usable(connection)
    return ConnectionSession(connection, timeout=timeout, deadline=deadline)


class ConnectionSession(SessionTokens, TimeoutSession):
    """Relative URLs (with or without a leading slash) are appended to the provider's API URL.
    Absolute URLs must point at the API's own scheme, host and port: the token is never sent
    anywhere else. One session per thread, as with any ``requests.Session``. A request body
    that is a stream or an open file can't be sent twice, so it is not retried after a 401."""

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float | None = None,
        deadline: float | None = DEFAULT,
    ) -> None:
        TimeoutSession.__init__(self, timeout)
        SessionTokens.__init__(self, connection, deadline)
        # An auth object, not just a default header: without one, requests looks up ~/.netrc
        # on every call, and an entry for the API's host would replace the tenant's token.
        self.auth = _ConnectionAuth(self)

    def __repr__(self) -> str:
        return f"<ConnectionSession for {self.connection!r}>"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        deadline = kwargs.pop("deadline", self.deadline)
        url = self._resolve(url if isinstance(url, str) else url.decode())
        if self._refresh_due() and self._should_refresh_ahead():
            self._refresh_ahead_of_expiry()
        if not self._sendable:
            # Stored before tokens were checked on arrival, and unfit for a header (CR/LF...):
            # to the API it would be a refused token, so get a new one the same way, unless
            # renewing is backing off after failing (then not on every request).
            if self._backing_off():
                raise self._unsendable_while_backing_off()
            self._refresh_rejected(self._access_token)
        resendable = _resendable(kwargs)
        response, retry = self._send(deadline, resendable, method, url, *args, **kwargs)
        if retry:
            response.close()  # first: its connection is of no more use, and its body unread
            self._refresh_rejected(self._access_token)
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

    def get_redirect_target(self, response: requests.Response) -> str | None:
        """Redirects are followed within the API's origin only. A redirect elsewhere comes back
        to the caller as the 3xx it is: a provider must not make this server fetch other hosts
        (an internal address, say) and hand the answer to the product as the API's."""
        target: str | None = super().get_redirect_target(response)
        if target is None or origin_of(urljoin(response.url, target)) != self._origin:
            return None
        return target


class _ConnectionAuth(requests.auth.AuthBase):
    """Puts the session's current token on each request (requests drops it on a redirect to
    another host)."""

    def __init__(self, session: ConnectionSession) -> None:
        self.session = session

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.session._authorization
        return request


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

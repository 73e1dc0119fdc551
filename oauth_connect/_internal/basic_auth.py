"""HTTP basic authentication in UTF-8, for the calls to providers' auth endpoints.

``requests`` encodes basic credentials in Latin-1 and fails on "Ł" or "€"; RFC 7617 §2.1 lets
a server ask for UTF-8, which is what browsers send and what servers that decode it expect.
"""

from __future__ import annotations

import base64

import requests
import requests.auth


class BasicAuth(requests.auth.AuthBase):
    """HTTP basic in UTF-8. Being an auth object also keeps requests from consulting ~/.netrc,
    whose entry for the provider's host would otherwise replace these credentials."""

    def __init__(self, header: str | None) -> None:
        self.header = header

    def __repr__(self) -> str:
        return "<BasicAuth>"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.header is not None:
            request.headers["Authorization"] = self.header
        return request


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` header value for ``username`` and ``password``, in UTF-8."""
    credentials = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def basic_auth_secrets(auth: tuple[str, str] | None) -> list[str]:
    """The secrets in HTTP basic credentials, as a provider might echo them: the password, and
    the header's base64 of username and password."""
    if auth is None:
        return []
    return [auth[1], basic_authorization(*auth).removeprefix("Basic ")]

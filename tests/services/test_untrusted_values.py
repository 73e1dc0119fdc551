"""Values from a provider are hostile input: what reaches an error, an event, a log or a page
is redacted first, then made printable, then cut; a token set is checked before it is stored;
a stored token a header can't carry is never sent; a redirect is not a revocation; no object
holding a secret shows it in its ``repr``."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests
import responses
from django.utils import timezone

from oauth_connect._internal.redact import MASK, provider_words
from oauth_connect.exceptions import ProviderError
from oauth_connect.models import Connection
from oauth_connect.providers import registry
from oauth_connect.providers.base import CredentialGrant, OAuthClient, TokenSet
from oauth_connect.providers.client import ProviderClient
from oauth_connect.services import disconnect
from oauth_connect.services.validation import check_tokens
from tests.conftest import API_URL, REVOKE_URL, TOKEN_URL, token_body

SECRET = "s3cr+t/value=&more"  # noqa: S105 - characters that URL and JSON encode differently


# provider_words ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "echo",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],
        "s3cr+t/value=&amp;more",
        "s3cr%2bt%2fvalue%3d%26more",
        base64.b64encode(SECRET.encode()).decode(),
        SECRET.encode().hex(),
    ],
    ids=[
        "plain",
        "url-encoded",
        "form-encoded",
        "json-escaped",
        "html-escaped",
        "lower-case-escapes",
        "base64",
        "hex",
    ],
)
def test_a_secret_is_masked_however_the_provider_echoes_it(echo: str) -> None:
    said = provider_words(f"bad token {echo} (refused)", [SECRET])
    assert said == f"bad token {MASK} (refused)"


def test_redaction_comes_before_the_cut() -> None:
    # The secret straddles the cut: cut first, and its first half would remain.
    text = "x" * 295 + SECRET + " and more"
    said = provider_words(text, [SECRET], limit=300)
    assert SECRET[:5] not in said and said.endswith("…")
    assert len(said) <= 300


def test_control_characters_and_direction_overrides_become_spaces() -> None:
    said = provider_words("a\x00b\r\nc\u202ed\x7fe", [])
    assert said == "a b c d e"


@pytest.mark.parametrize("value", [None, True, ["x"], {"a": 1}, b"bytes"])
def test_only_text_and_numbers_are_taken_as_words(value: object) -> None:
    assert provider_words(value, []) == ""


# check_tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "access", "refresh"),
    [
        (TokenSet("good", "also good"), "", ""),
        (TokenSet("has space", "r"), "characters", ""),
        (TokenSet("a\r\nb", "r"), "characters", ""),
        (TokenSet("Łódź", "r"), "characters", ""),
        (TokenSet("a" * 16385, "r"), "longer than 16,384", ""),
        (TokenSet("", "r"), "missing", ""),
        (TokenSet("a", "r\x00"), "", "characters"),
        (TokenSet("a", None), "", ""),  # None: keep the refresh token we hold
    ],
)
def test_each_token_is_checked_against_its_grammar(
    tokens: TokenSet, access: str, refresh: str
) -> None:
    checked = check_tokens(tokens, registry.get("apicbase"))
    assert (access in checked.access_problem) and (bool(access) == bool(checked.access_problem))
    assert (refresh in checked.refresh_problem) and (bool(refresh) == bool(checked.refresh_problem))


def test_impossible_expiries_are_unknown_and_said(db: None) -> None:
    far = timezone.now() + timedelta(days=365 * 20)
    checked = check_tokens(
        TokenSet("a", "r", expires_at=far, refresh_expires_at=far.replace(tzinfo=None)),
        registry.get("apicbase"),
    )
    assert checked.usable
    assert (checked.tokens.expires_at, checked.tokens.refresh_expires_at) == (None, None)
    assert "treated as unknown" in " ".join(checked.notes)


# The session never sends an unsendable stored token ---------------------------------------------


@pytest.mark.django_db
def test_a_stored_token_a_header_cant_carry_is_replaced_before_any_call(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    # Stored before tokens were checked on arrival (an upgrade): requests would raise an error
    # quoting it. The session refreshes first, and the API only ever sees the new token.
    connection = make_connection(access_token="stale\r\ntoken-1")
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))
    http_mock.add(responses.GET, API_URL + "me/", json={"ok": True})

    assert connection.session().get("me/").json() == {"ok": True}
    assert http_mock.calls[1].request.headers["Authorization"] == "Bearer access-token-2"
    assert Connection.objects.get(pk=connection.pk).access_token == "access-token-2"


@pytest.mark.django_db
def test_an_unsendable_token_with_nothing_to_renew_it_asks_for_a_reconnect(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    connection = make_connection(access_token="stale\ntoken", refresh_token="")
    with pytest.raises(ProviderError, match="reconnect") as info:
        connection.session().get("me/")
    assert "stale" not in str(info.value) and not http_mock.calls
    assert Connection.objects.get(pk=connection.pk).status == "reauth_required"


# Revocation -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", [307, 308, 302, 500])
def test_only_a_2xx_answer_is_a_revocation(
    http_mock: responses.RequestsMock, make_connection: Any, status: int
) -> None:
    http_mock.add(
        responses.POST, REVOKE_URL, status=status, headers={"Location": "https://elsewhere.test/"}
    )
    connection = make_connection()
    assert disconnect(connection) is False  # not revoked, though wiped here
    assert len(http_mock.calls) == 1  # the redirect was not followed
    event = connection.events.get()
    assert (
        f"answered HTTP {status}" in event.message and "Tokens wiped here anyway" in event.message
    )


# No secret in a repr ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_object_holding_a_secret_shows_it_in_its_repr(make_connection: Any) -> None:
    connection = make_connection(access_token="rt-access-0001", refresh_token="rt-refresh-0001")
    session = connection.session()
    client = ProviderClient("apicbase", connection=connection)
    objects = [
        connection,
        session,
        session.auth,
        client,
        TokenSet("rt-access-0001", "rt-refresh-0001"),
        OAuthClient("id", "rt-client-secret-0001"),
        CredentialGrant(TokenSet("rt-access-0001"), secrets={"password": "rt-password-0001"}),
        ProviderError("failed", connection=connection),
    ]
    for obj in objects:
        assert "rt-" not in repr(obj), obj
    assert isinstance(session, requests.Session)


# Redirects from the API -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://evil.test/x",
        "http://api.apicbase.test/",
    ],
)
def test_the_session_follows_no_redirect_off_the_apis_origin(
    http_mock: responses.RequestsMock, make_connection: Any, location: str
) -> None:
    http_mock.add(responses.GET, API_URL + "me/", status=302, headers={"Location": location})
    response = make_connection().session().get("me/")
    assert response.status_code == 302 and len(http_mock.calls) == 1


@pytest.mark.django_db
def test_the_session_follows_a_redirect_within_the_api(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.GET, API_URL + "me/", status=301, headers={"Location": "/api/v1/you/"})
    http_mock.add(responses.GET, API_URL + "you/", json={"ok": True})
    assert make_connection().session().get("me/").json() == {"ok": True}
    assert http_mock.calls[1].request.headers["Authorization"] == "Bearer access-token-1"


def test_a_secret_with_a_control_character_inside_is_still_masked() -> None:
    said = provider_words(f"bad {SECRET[:6]}\x00{SECRET[6:]} here", [SECRET])
    assert said == f"bad {MASK} here"


@pytest.mark.django_db
def test_a_lone_surrogate_in_a_providers_words_is_recorded_not_raised(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    # JSON's "\ud800" decodes to a character no encoder takes: the failure must still be stored.
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        status=400,
        json={"error": "server_error", "error_description": "bad \ud800 thing"},
    )
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(ProviderError):
        connection.session().get("me/")
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == "error" and stored.retry_not_before is not None
    assert "bad thing" in " ".join(stored.last_error.split())
    stored.last_error.encode()  # nothing left that can't be encoded


@pytest.mark.django_db
def test_an_unsendable_token_backing_off_does_not_call_the_provider_every_time(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, status=503, json={"error": "unavailable"})
    connection = make_connection(access_token="stale\r\ntoken")
    session = connection.session()
    for _ in range(3):
        with pytest.raises(ProviderError):
            session.get("me/")
    assert len(http_mock.calls) == 1  # once, then the backoff holds


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda gz: gz[: len(gz) // 2], id="cut-short"),
        pytest.param(lambda gz: b"not gzip at all", id="not-gzip"),
    ],
)
def test_a_compressed_body_that_does_not_end_or_decompress_is_unusable(
    http_mock: responses.RequestsMock, body: Any
) -> None:
    import gzip

    from oauth_connect.exceptions import UnusableAnswer

    compressed = gzip.compress(json.dumps(token_body(2)).encode() * 20)
    http_mock.add(
        responses.POST, TOKEN_URL, body=body(compressed), headers={"Content-Encoding": "gzip"}
    )
    with pytest.raises(UnusableAnswer, match="compressed body that does not decompress"):
        ProviderClient("apicbase").post_form(TOKEN_URL, {"grant_type": "refresh_token"})


def test_the_watchdog_cuts_the_socket_under_any_wrapper_and_ignores_the_rest() -> None:
    import socket

    from oauth_connect._internal.deadline import _socket_of

    class TLSInTLS:  # urllib3's SSLTransport keeps the OS socket as .socket
        def __init__(self, sock: socket.socket) -> None:
            self.socket = sock

    class Connection_:
        def __init__(self, sock: Any) -> None:
            self.sock = sock

    with socket.socket() as sock:
        assert _socket_of(sock) is sock
        assert _socket_of(Connection_(sock)) is sock
        assert _socket_of(Connection_(TLSInTLS(sock))) is sock
    assert _socket_of(Connection_(None)) is None
    assert _socket_of(Connection_(object())) is None


# Half a rotation, from an OAuth2 token endpoint --------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "stored", "problem"),
    [
        ({"access_token": ""}, ("access-token-1", "refresh-token-2"), "access token is missing"),
        ({"access_token": None}, ("access-token-1", "refresh-token-2"), "access token is missing"),
        ({"access_token": 123}, ("access-token-1", "refresh-token-2"), "access token is missing"),
        ({"refresh_token": 12345}, ("access-token-2", "refresh-token-1"), "refresh token is"),
        ({"refresh_token": True}, ("access-token-2", "refresh-token-1"), "refresh token is"),
    ],
)
def test_whatever_half_of_a_rotation_is_usable_is_kept_and_the_failure_said(
    http_mock: responses.RequestsMock,
    make_connection: Any,
    change: dict[str, Any],
    stored: tuple[str, str],
    problem: str,
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2, **change))
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(ProviderError, match=problem):
        connection.session().get("me/")
    row = Connection.objects.get(pk=connection.pk)
    assert (row.access_token, row.refresh_token) == stored
    assert row.status == "error" and row.events.latest("pk").kind == "refresh_failed"


@pytest.mark.django_db
def test_a_lifetime_of_true_is_no_lifetime(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2, expires_in=True))
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    from oauth_connect.services import refresh_connection

    assert refresh_connection(connection) is True
    assert Connection.objects.get(pk=connection.pk).expires_at is None


# Echoes of secrets this call did not send --------------------------------------------------------


@pytest.mark.django_db
def test_the_connections_own_secrets_are_masked_even_when_not_sent(
    http_mock: responses.RequestsMock, make_connection: Any
) -> None:
    # A refresh sends the refresh token, not the access token; the provider quotes both, the
    # refresh token in base64.
    import base64

    b64 = base64.b64encode(b"refresh-token-1").decode()
    said = f"access-token-1 / {b64} still valid"
    http_mock.add(
        responses.POST,
        TOKEN_URL,
        status=400,
        json={"error": "invalid_request", "error_description": said},
    )
    connection = make_connection(expires_at=timezone.now() - timedelta(minutes=1))
    from oauth_connect.services import refresh_connection

    with pytest.raises(ProviderError) as info:
        refresh_connection(connection)
    row = Connection.objects.get(pk=connection.pk)
    for text in (str(info.value), row.last_error, row.events.latest("pk").message):
        assert "access-token-1" not in text and b64 not in text

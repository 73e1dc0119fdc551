"""Custobar against the sandbox's fake of it, over real HTTP: HTTP basic exchanged for the user's
one API token, a token rotated elsewhere, rotation on demand (service and admin action)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model

from example_project.sandbox.models import CustobarToken
from oauth_connect.exceptions import ReauthorizationRequired, UnsupportedOperation
from oauth_connect.models import Connection
from oauth_connect.services import rotate_token
from tests.conftest import race

from .conftest import PASSWORD, Sandbox, event_kinds, record_statuses

pytestmark = pytest.mark.django_db(transaction=True)

COMPANY = "acme"


def custobar_url(sandbox: Sandbox, path: str, company: str = COMPANY) -> str:
    return sandbox.absolute(f"/sandbox/custobar/{company}/{path}")


def valid_token(user: Any, company: str = COMPANY) -> str:
    """The one token the sandbox currently accepts for ``user``."""
    return CustobarToken.objects.get(user=user, company=company, revoked_at=None).token


def rotate_elsewhere(sandbox: Sandbox, username: str = "alice", password: str = PASSWORD) -> str:
    """Someone rotates the token in Custobar (another integration, a script): ours is dead."""
    response = requests.post(
        custobar_url(sandbox, "api/auth/new-access-token/"), auth=(username, password), timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def customers_status(sandbox: Sandbox, authorization: str | None) -> int:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return requests.get(
        custobar_url(sandbox, "api/customers/"), headers=headers, timeout=10
    ).status_code


@pytest.fixture
def connect_custobar(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> Callable[..., Connection]:
    """Connect Custobar through the Connections page form, as alice of company acme."""

    def connect(**fields: str) -> Connection:
        values = {"company": COMPANY, "username": "alice", "password": PASSWORD, **fields}
        sandbox.connected_with_credentials(browser, "custobar", **values)
        return Connection.objects.get(tenant=organisation, provider="custobar")

    return connect


# The sandbox itself ----------------------------------------------------------------------------


def test_the_sandbox_behaves_like_custobars_docs(sandbox: Sandbox, user: Any) -> None:
    token_url = custobar_url(sandbox, "api/auth/access-token/")
    refused = requests.get(token_url, auth=("alice", "wrong"), timeout=10)
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Invalid username/password."}
    assert requests.get(token_url, timeout=10).status_code == 401

    first = requests.get(token_url, auth=("alice", PASSWORD), timeout=10).json()["token"]
    assert requests.get(token_url, auth=("alice", PASSWORD), timeout=10).json() == {"token": first}
    assert customers_status(sandbox, f"Token {first}") == 200
    for wrong in (None, f"Bearer {first}", "Token nope", f"Token {first}x"):
        assert customers_status(sandbox, wrong) == 401
    # A token belongs to one company, as tokens of acme.custobar.com do.
    other = requests.get(
        custobar_url(sandbox, "api/customers/", company="other"),
        headers={"Authorization": f"Token {first}"},
        timeout=10,
    )
    assert other.status_code == 401

    second = rotate_elsewhere(sandbox)
    assert second != first
    assert customers_status(sandbox, f"Token {first}") == 401
    assert customers_status(sandbox, f"Token {second}") == 200
    assert requests.get(token_url, auth=("alice", PASSWORD), timeout=10).json() == {"token": second}
    assert CustobarToken.objects.filter(user=user, revoked_at=None).count() == 1
    assert (
        requests.get(custobar_url(sandbox, "api/auth/new-access-token/"), timeout=10).status_code
        == 405
    )


# Connecting ------------------------------------------------------------------------------------


def test_connects_through_the_form_and_calls_the_api(
    sandbox: Sandbox, browser: requests.Session, connect_custobar: Any, user: Any
) -> None:
    connection = connect_custobar()

    assert connection.status == Connection.Status.ACTIVE
    assert connection.label == ""
    assert connection.account == {
        "company": COMPANY,
        "base_url": custobar_url(sandbox, ""),
        "username": "alice",
    }
    assert connection.token_type == "Token"
    assert connection.expires_at is None  # Custobar tokens don't expire
    assert connection.has_stored_credentials
    assert connection.access_token == valid_token(user)
    assert CustobarToken.objects.count() == 1  # fetched the one token; created none extra
    assert event_kinds(connection) == ["connected"]
    assert "password kept (encrypted)" in connection.events.get().message

    page = browser.get(sandbox.absolute("/connections/")).text
    assert f'data-connection="{connection.pk}"' in page
    assert "alice @ acme" in page

    session = connection.session()
    statuses = record_statuses(session)
    response = session.get("api/customers/")
    assert response.status_code == 200
    assert response.json()["results"]
    assert response.request.headers["Authorization"] == f"Token {valid_token(user)}"
    assert statuses == [200]


def test_the_company_may_be_typed_as_its_base_url(
    sandbox: Sandbox, connect_custobar: Any, user: Any
) -> None:
    connection = connect_custobar(company=custobar_url(sandbox, "").upper())

    assert connection.account["company"] == COMPANY
    assert connection.session().get("api/customers/").status_code == 200


def test_a_wrong_password_is_a_form_error_and_stores_nothing(
    sandbox: Sandbox, browser: requests.Session, organisation: Any
) -> None:
    page = sandbox.connect_with_credentials(
        browser, "custobar", company=COMPANY, username="alice", password="wrong-pw-5x1"
    )

    assert page.url == sandbox.absolute("/connections/custobar/connect/")
    assert "Custobar did not accept these credentials. Check them and try again." in page.text
    assert 'name="company"' in page.text  # the form again, to correct
    assert "wrong-pw-5x1" not in page.text  # the password is not sent back
    assert not Connection.objects.exists()
    assert not CustobarToken.objects.exists()


def test_a_company_outside_the_base_url_is_refused_before_any_call(
    sandbox: Sandbox, browser: requests.Session
) -> None:
    page = sandbox.connect_with_credentials(
        browser, "custobar", company="https://evil.example/", username="alice", password=PASSWORD
    )

    assert page.url == sandbox.absolute("/connections/custobar/connect/")
    assert "is not a Custobar company" in page.text
    assert not Connection.objects.exists()
    assert not CustobarToken.objects.exists()


# A token rotated elsewhere ---------------------------------------------------------------------


def test_a_token_rotated_elsewhere_is_fetched_again_once(
    sandbox: Sandbox, connect_custobar: Any, user: Any
) -> None:
    connection = connect_custobar()
    old = connection.access_token
    current = rotate_elsewhere(sandbox)
    issued = CustobarToken.objects.count()

    session = connection.session()
    statuses = record_statuses(session)
    response = session.get("api/customers/")

    assert statuses == [401, 200]
    assert response.status_code == 200
    # It fetched the current token (GET access-token) rather than making a new one.
    assert CustobarToken.objects.count() == issued
    assert valid_token(user) == current != old
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == current
    assert stored.status == Connection.Status.ACTIVE
    assert event_kinds(stored) == ["connected", "refreshed"]
    # And the next session uses it straight away.
    again = stored.session()
    again_statuses = record_statuses(again)
    assert again.get("api/customers/").status_code == 200
    assert again_statuses == [200]


def test_concurrent_requests_with_a_rotated_token_fetch_it_once(
    sandbox: Sandbox, connect_custobar: Any, user: Any
) -> None:
    connection = connect_custobar()
    current = rotate_elsewhere(sandbox)
    workers = 8

    def call_api() -> tuple[int, int]:
        session = Connection.objects.get(pk=connection.pk).session()
        statuses = record_statuses(session)
        response = session.get("api/customers/")
        return response.status_code, statuses[-1]

    results = race(workers, call_api)

    assert results == [(200, 200)] * workers
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == current == valid_token(user)
    # One fetch of the current token, however many threads saw the 401 at once.
    assert event_kinds(stored) == ["connected", "refreshed"]
    assert CustobarToken.objects.count() == 2


def test_without_the_password_a_rotated_token_needs_reauthorization(
    sandbox: Sandbox, browser: requests.Session, connect_custobar: Any
) -> None:
    connection = connect_custobar(password_storage="token_only")
    assert not connection.has_stored_credentials
    assert "password not kept" in connection.events.get().message
    rotate_elsewhere(sandbox)
    issued = CustobarToken.objects.count()

    # services/session.py: the 401 calls refresh_rejected_token; with no password the provider
    # can't refresh, so refresh.py marks the connection reauth_required and raises.
    session = connection.session()
    statuses = record_statuses(session)
    with pytest.raises(ReauthorizationRequired):
        session.get("api/customers/")

    assert statuses == [401]
    assert CustobarToken.objects.count() == issued
    assert connection.status == Connection.Status.REAUTH_REQUIRED
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert event_kinds(stored) == ["connected", "reauth_required"]
    assert "Needs reconnecting" in browser.get(sandbox.absolute("/connections/")).text
    with pytest.raises(ReauthorizationRequired):
        stored.session()


def test_a_password_changed_at_custobar_needs_reauthorization(
    sandbox: Sandbox, connect_custobar: Any, user: Any
) -> None:
    connection = connect_custobar()
    rotate_elsewhere(sandbox)
    user.set_password("changed-at-custobar")
    user.save()

    with pytest.raises(ReauthorizationRequired):
        connection.session().get("api/customers/")

    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.REAUTH_REQUIRED
    assert "refused the credentials (HTTP 401)" in stored.last_error
    assert event_kinds(stored) == ["connected", "reauth_required"]


# Rotation on demand ----------------------------------------------------------------------------


def test_rotate_token_replaces_the_token_at_custobar(
    sandbox: Sandbox, connect_custobar: Any, user: Any
) -> None:
    connection = connect_custobar()
    old = connection.access_token

    rotate_token(connection)

    new = valid_token(user)
    assert new != old
    assert connection.access_token == new
    assert Connection.objects.get(pk=connection.pk).access_token == new
    assert customers_status(sandbox, f"Token {old}") == 401
    assert connection.session().get("api/customers/").status_code == 200
    assert event_kinds(connection) == ["connected", "rotated"]
    assert CustobarToken.objects.filter(user=user).count() == 2


def test_the_admin_rotate_action_rotates_at_custobar(
    sandbox: Sandbox, connect_custobar: Any, user: Any, client: Any
) -> None:
    connection = connect_custobar()
    old = connection.access_token
    operator = get_user_model().objects.create_superuser("operator", password="operator-pw")
    client.force_login(operator)

    page = client.post(
        "/admin/oauth_connect/connection/",
        {"action": "rotate_token", "_selected_action": [connection.pk]},
        follow=True,
    )

    assert page.status_code == 200
    assert "Rotated the token of 1 connection." in page.content.decode()
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == valid_token(user) != old
    assert customers_status(sandbox, f"Token {old}") == 401
    assert stored.session().get("api/customers/").status_code == 200
    assert event_kinds(stored) == ["connected", "rotated"]


def test_rotating_without_the_password_is_refused_and_changes_nothing(
    sandbox: Sandbox, connect_custobar: Any, user: Any
) -> None:
    connection = connect_custobar(password_storage="token_only")
    token = connection.access_token

    with pytest.raises(UnsupportedOperation, match="needs the password"):
        rotate_token(connection)

    assert valid_token(user) == token
    assert CustobarToken.objects.count() == 1
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.ACTIVE
    assert stored.access_token == token
    assert event_kinds(stored) == ["connected"]


def test_disconnect_forgets_the_kept_password(
    sandbox: Sandbox, browser: requests.Session, connect_custobar: Any
) -> None:
    connection = connect_custobar()
    assert connection.has_stored_credentials

    page = sandbox.post(browser, f"/connections/{connection.pk}/disconnect/")

    assert "Custobar is disconnected." in page.text
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.status == Connection.Status.DISCONNECTED
    assert stored.access_token == ""
    # The password was only kept to renew the token; a disconnected connection renews nothing.
    assert not stored.has_stored_credentials, "disconnect kept the tenant's Custobar password"


def test_credentials_beyond_latin_1_connect_over_real_http(
    sandbox: Sandbox, connect_custobar: Callable[..., Connection], organisation: Any
) -> None:
    # requests alone encodes basic auth in Latin-1 and fails on "Ł": we send UTF-8, which the
    # sandbox (like Django REST framework) reads, falling back to Latin-1.
    user = get_user_model().objects.create_user("Łukasz", password="pa€ss-ñ")
    connection = connect_custobar(username="Łukasz", password="pa€ss-ñ")

    assert connection.status == Connection.Status.ACTIVE
    assert connection.access_token == valid_token(user)
    assert connection.session().get("api/customers/").status_code == 200

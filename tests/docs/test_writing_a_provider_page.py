"""docs/providers/writing-a-provider.md: its tables tell the truth about the base classes, and
its two sample providers work. Stockroom (registered with ``@register``) connects, calls its API
and logs in again on its "expired" status; Globex (named with ``CLASS``) goes through a whole
authorization flow in our views. Both pass the provider contract: Stockroom through the very
test class the page shows, Globex through one written here. The vendors are mocked with
``responses``; no registration outlives its test."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from django.utils import timezone

from oauth_connect.exceptions import InvalidCredentials, ReauthorizationRequired
from oauth_connect.models import Connection
from oauth_connect.providers import OAuth2Provider, Provider, registry
from oauth_connect.services import forget_credentials
from tests.conftest import token_body
from tests.docs.harness import DOCS, blocks
from tests.docs.provider_pages import point_samples_at
from tests.providers.contract import ProviderContract

PAGE = "providers/writing-a-provider.md"
STOCKROOM_LOGIN = "https://api.stockroom.example/v2/auth/session"
STOCKROOM_API = "https://api.stockroom.example/v2/"
GLOBEX_TOKEN = "https://login.globex.example/oauth/token"
GLOBEX_API = "https://api.globex.example/v1/"
STOCK = {"items": [{"sku": "FLOUR-25", "quantity": 4}]}
RESOLVER = "example_project.tenants.resolvers.current_organisation"


@contextmanager
def registrations_undone() -> Iterator[None]:
    """Whatever a sample registers is unregistered afterwards."""
    before = set(registry.registered_ids())
    try:
        yield
    finally:
        for provider_id in set(registry.registered_ids()) - before:
            registry.unregister(provider_id)


def sample_module(path: str) -> types.ModuleType:
    """The page's ``# <path>`` block, executed as a module of its own."""
    [block] = [block for block in blocks(PAGE) if block.code.startswith(f"# {path}\n")]
    module = types.ModuleType(path.removesuffix(".py").replace("/", "."))
    exec(compile(block.code, str(block), "exec"), module.__dict__)  # noqa: S102
    return module


with registrations_undone():
    STOCKROOM = sample_module("myapp/stockroom.py")
GLOBEX = sample_module("myapp/globex.py")
PAGES_CONTRACT = sample_module("tests/providers/test_stockroom.py")


@pytest.fixture
def page(
    run_docs_page: Callable[..., Any],
    http_mock: responses.RequestsMock,
    organisation: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    point_samples_at(
        monkeypatch,
        "http://unused.example",
        GLOBEX_CLIENT_ID="globex-client-id",
        GLOBEX_CLIENT_SECRET="globex-client-secret",
    )
    http_mock.add(
        responses.POST, STOCKROOM_LOGIN, json={"session_key": "key-1", "valid_for": 43200}
    )
    http_mock.add(responses.GET, STOCKROOM_API + "stock/", json=STOCK)
    names = {"organisation": organisation, "password": "kitchen pw "}
    with registrations_undone():
        yield run_docs_page("providers/writing-a-provider.md", namespace=names)


# The tables ------------------------------------------------------------------------------------


def table_rows(heading: str) -> dict[str, str]:
    """First and second cell of each row of the table whose header starts with ``heading``."""
    text = (DOCS / PAGE).read_text()
    table = text[text.index(f"| {heading} |") :].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    return {cells[0].strip("|` ").split("(")[0]: cells[1].strip() for cells in rows}


def test_the_attribute_table_gives_the_base_class_defaults() -> None:
    rows = table_rows("attribute")
    assert set(rows) >= {"id", "name", "default_settings", "required_settings", "header_scheme"}
    for attribute, default in rows.items():
        if default == "required":
            assert attribute in Provider.__annotations__
            assert not hasattr(Provider, attribute), attribute
        else:
            shown = re.fullmatch(r"`(.+)`", default)
            assert shown, f"{attribute}: {default!r}"
            assert eval(shown.group(1)) == getattr(Provider, attribute), attribute  # noqa: S307


def test_every_hook_in_the_table_exists_and_refresh_is_the_one_required() -> None:
    hooks = table_rows("hook")
    for hook in hooks:
        assert callable(getattr(Provider, hook)), hook
    for hook in ("parse_token_response", "refresh_params"):
        assert callable(getattr(OAuth2Provider, hook)) and not hasattr(Provider, hook)
    bare = type("Bare", (Provider,), {"id": "bare", "name": "Bare"})("bare")
    with pytest.raises(NotImplementedError, match="Bare must implement refresh"):
        bare.refresh(None, None, None)  # type: ignore[arg-type]
    assert hooks["refresh"].startswith("required.")


# Stockroom ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_stockroom_connects_and_calls_its_api_as_shown(
    page: Any, http_mock: responses.RequestsMock
) -> None:
    login, api = http_mock.calls
    assert parse_qs(login.request.body) == {
        "login": ["chef@example.com"],
        "password": ["kitchen pw "],
    }
    assert api.request.headers["Authorization"] == "Session key-1"
    assert page.namespace["stock"] == STOCK
    connection = Connection.objects.get(pk=page.namespace["connection"].pk)
    assert connection.account == {"username": "chef@example.com"}
    assert connection.stored_credential("password") == "kitchen pw "
    assert connection.refresh_token == ""
    assert connection.expires_at is not None
    assert abs(connection.expires_at - timezone.now() - timedelta(hours=12)) < timedelta(minutes=1)
    assert "stockroom" in registry.registered_ids()  # by @register
    assert "globex" not in registry.registered_ids()  # by CLASS only
    assert type(registry.get("globex")).__name__ == "GlobexProvider"


@pytest.mark.django_db
def test_stockroom_logs_in_again_on_419(page: Any, http_mock: responses.RequestsMock) -> None:
    connection = page.namespace["connection"]
    http_mock.add(responses.GET, STOCKROOM_API + "stock/", status=419, json={"error": "expired"})
    http_mock.add(responses.POST, STOCKROOM_LOGIN, json={"session_key": "key-2", "valid_for": 60})
    http_mock.add(responses.GET, STOCKROOM_API + "stock/", json=STOCK)

    assert connection.session().get("stock/").json() == STOCK

    sent = [call.request.headers.get("Authorization") for call in http_mock.calls[2:]]
    assert sent[0] == "Session key-1" and sent[2] == "Session key-2"
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.access_token == "key-2"
    assert list(stored.events.order_by("pk").values_list("kind", flat=True)) == [
        "connected",
        "refreshed",
    ]


@pytest.mark.django_db
def test_without_a_kept_password_419_means_reconnect_without_a_call(
    page: Any, http_mock: responses.RequestsMock
) -> None:
    connection = page.namespace["connection"]
    forget_credentials(connection)
    http_mock.add(responses.GET, STOCKROOM_API + "stock/", status=419, json={"error": "expired"})

    with pytest.raises(ReauthorizationRequired):
        connection.session().get("stock/")

    assert [call.request.url for call in http_mock.calls[2:]] == [STOCKROOM_API + "stock/"]
    assert connection.status == Connection.Status.REAUTH_REQUIRED


@pytest.mark.django_db
def test_stockroom_refuses_a_wrong_password_and_stores_nothing(
    page: Any, http_mock: responses.RequestsMock, organisation: Any
) -> None:
    http_mock.add(responses.POST, STOCKROOM_LOGIN, status=401, json={"message": "Wrong login"})
    connect = page.namespace["connect_with_credentials"]
    with pytest.raises(InvalidCredentials) as refused:
        connect(organisation, "stockroom", "other", login="chef@example.com", password="nope")
    assert str(refused.value) == (
        "Stockroom did not accept these credentials. Check them and try again."
    )
    assert not Connection.objects.filter(label="other").exists()


@pytest.mark.django_db
def test_the_connect_form_is_built_from_the_credential_fields(
    page: Any, settings: Any, logged_in_client: Any
) -> None:
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "TENANT_RESOLVER": RESOLVER}
    form = logged_in_client.get("/connections/stockroom/connect/").content.decode()
    for text in ('name="login"', "The email you sign in with.", 'type="password"'):
        assert text in form, text


# Globex ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_globex_goes_through_the_authorization_flow(
    page: Any,
    settings: Any,
    logged_in_client: Any,
    http_mock: responses.RequestsMock,
    organisation: Any,
) -> None:
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "TENANT_RESOLVER": RESOLVER}
    started = logged_in_client.post("/connections/globex/connect/", {"label": ""})
    authorize = urlsplit(started.url)
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == (
        "https://login.globex.example/oauth/authorize"
    )
    query = parse_qs(authorize.query)
    assert query["scope"] == ["orders:read"] and query["client_id"] == ["globex-client-id"]
    http_mock.add(responses.POST, GLOBEX_TOKEN, json={"data": token_body(1)})

    back = logged_in_client.get(
        "/connections/globex/callback/", {"state": query["state"][0], "code": "code-1"}
    )

    assert back.url == "/connections/"
    exchange = parse_qs(http_mock.calls[-1].request.body)
    assert exchange["grant_type"] == ["authorization_code"] and "code_verifier" in exchange
    connection = Connection.objects.get(tenant=organisation, provider="globex")
    assert connection.access_token == "access-token-1"
    assert connection.refresh_token == "refresh-token-1"
    http_mock.add(responses.GET, GLOBEX_API + "me", status=403)
    http_mock.add(responses.POST, GLOBEX_TOKEN, json={"data": token_body(2)})
    http_mock.add(responses.GET, GLOBEX_API + "me", json={"name": "alice"})

    assert connection.session().get("me").json() == {"name": "alice"}
    assert [
        call.request.headers.get("Authorization")
        for call in http_mock.calls
        if call.request.url == GLOBEX_API + "me"
    ] == ["Token access-token-1", "Token access-token-2"]


# The contract ---------------------------------------------------------------------------------


class TestStockroomAsThePageTestsIt(PAGES_CONTRACT.TestStockroomProvider):  # type: ignore[misc, name-defined]
    """The page's own contract test class, run on the page's own Stockroom class."""

    @pytest.fixture(autouse=True)
    def stockroom_registered(self) -> Iterator[None]:
        with registry.registered(STOCKROOM.StockroomProvider):
            yield


class TestGlobexKeepsTheContract(ProviderContract):
    provider_id = "globex"
    api_url = GLOBEX_API
    header_scheme = "Token"
    expired_token_statuses = (401, 403)
    refresh_url = GLOBEX_TOKEN

    @pytest.fixture(autouse=True)
    def globex_importable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Where the page's settings say the class lives."""
        monkeypatch.setitem(sys.modules, "myapp", types.ModuleType("myapp"))
        monkeypatch.setitem(sys.modules, "myapp.globex", GLOBEX)

    def provider_settings(self) -> dict[str, Any]:
        return {
            "CLASS": "myapp.globex.GlobexProvider",
            "CLIENT_ID": "settings-client-id",
            "CLIENT_SECRET": "globex-secret",
        }

    def refresh_answer(self, n: int) -> dict[str, Any]:
        return {"data": token_body(n)}

    def dead_grant_answer(self) -> tuple[int, dict[str, Any]]:
        return 400, {"error": "invalid_grant", "error_description": "Refresh token revoked"}


def test_the_contract_sample_is_the_one_run_here() -> None:
    assert issubclass(PAGES_CONTRACT.TestStockroomProvider, ProviderContract)
    assert json.loads(
        PAGES_CONTRACT.TestStockroomProvider().connection_fields()["credentials"]
    ) == {"password": "kitchen-pw"}

"""docs/security.md: the page's rotation procedure, run step by step, really rotates the key:
secrets stored under the old key read back with only the new one, and no stored value can be
decrypted with the old key any more. The guarantees and limits the page states are checked too.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
import responses
from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from django.db import connection as db
from django.utils import timezone
from django.views.debug import ExceptionReporter

from example_project.tenants.models import Organisation
from oauth_connect.exceptions import EncryptionKeyError, ProviderError, UnsafeURLError
from oauth_connect.fields import EncryptedTextField
from oauth_connect.models import ClientCredentials, Connection
from tests.conftest import API_URL, KEY, OLD_KEY
from tests.docs.harness import DOCS, PageRun, blocks

PAGE = "security.md"
SECRETS = {
    "access": "access-production-51c3",
    "refresh": "refresh-production-a7d0",
    "custobar_token": "custobar-token-08be",
    "password": "custobar-password-3e91",
    "client_secret": "tenant-client-secret-6f2a",
}


def page_block(needle: str) -> str:
    found = [block.code for block in blocks(PAGE) if needle in block.code]
    assert len(found) == 1, f"{len(found)} blocks of docs/{PAGE} contain {needle!r}"
    return found[0]


def section(heading: str) -> str:
    text = (DOCS / PAGE).read_text()
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def stored_values() -> dict[str, str]:
    """Every non-empty encrypted column in the database, as stored."""
    values = {}
    with db.cursor() as cursor:
        for model in apps.get_models():
            names = [
                f.column for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)
            ]
            for name in names:
                cursor.execute(
                    f"SELECT id, {name} FROM {model._meta.db_table}"  # noqa: S608 - our names
                )
                for pk, value in cursor.fetchall():
                    if value:
                        values[f"{model._meta.label} #{pk} {name}"] = value
    return values


def decrypts_with(key: str, ciphertext: str) -> bool:
    try:
        Fernet(key).decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


# The page, run -----------------------------------------------------------------------------------


def test_the_rotation_procedure_rotates_the_key(
    run_docs_page: Callable[..., PageRun],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    make_connection: Callable[..., Connection],
    organisation: Organisation,
) -> None:
    # Before the page: a deployment whose secrets are under the key in OAUTH_CONNECT_KEY_1.
    monkeypatch.setenv("OAUTH_CONNECT_KEY_1", OLD_KEY)
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [OLD_KEY]
    connection = make_connection(
        label="production", access_token=SECRETS["access"], refresh_token=SECRETS["refresh"]
    )
    custobar = make_connection(
        provider="custobar",
        access_token=SECRETS["custobar_token"],
        refresh_token="",
        expires_at=None,
        account={"company": "acme", "username": "alice"},
        credentials=json.dumps({"password": SECRETS["password"]}),
    )
    make_connection(label="old", status="disconnected", access_token="", refresh_token="")
    credentials = ClientCredentials.objects.create(
        tenant=organisation,
        provider="apicbase",
        client_id="tenant-client",
        client_secret=SECRETS["client_secret"],
    )
    before = stored_values()
    assert len(before) == 5 and all(decrypts_with(OLD_KEY, v) for v in before.values())
    generated: list[str] = []

    def python(arguments: list[str]) -> str:
        """``python -c CODE``, run here; then what step 1 asks of the reader: store the printed
        key as OAUTH_CONNECT_KEY_2."""
        assert arguments[0] == "-c" and len(arguments) == 2
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(arguments[1], {})  # noqa: S102 - the page's one-liner
        generated.append(out.getvalue().strip())
        monkeypatch.setenv("OAUTH_CONNECT_KEY_2", generated[-1])
        return out.getvalue()

    prose_assumes = {"connection": connection}
    run = run_docs_page("security.md", namespace=prose_assumes, commands={"python": python})

    # "What is encrypted": the raw column is Fernet ciphertext of the token.
    stored = run.namespace["stored"]
    assert stored.startswith("gAAAAAB")
    assert SECRETS["access"] not in stored
    assert Fernet(OLD_KEY).decrypt(stored.encode()).decode() == SECRETS["access"]

    # Step 1 printed a new Fernet key; step 5 left it as the only key.
    [new_key] = generated
    Fernet(new_key)
    assert new_key not in (OLD_KEY, KEY)
    final_settings = settings.OAUTH_CONNECT
    assert final_settings == {"ENCRYPTION_KEYS": [new_key]}

    # Steps 4 and 6 each printed what the page shows.
    rotations = [
        output[0]
        for block, output in run.outputs
        if "rotate_encryption_keys" in block.code and block.language == "sh"
    ]
    assert len(rotations) == 2
    documented = page_block("Re-encrypted").strip()
    assert [output.strip() for output in rotations] == [documented, documented]

    # Every stored secret is now under the new key, and none under the old one.
    after = stored_values()
    assert set(after) == set(before)
    for name, value in after.items():
        assert decrypts_with(new_key, value), name
        assert not decrypts_with(OLD_KEY, value), name
    # ... and reads back, with only the new key configured.
    connection = Connection.objects.get(pk=connection.pk)
    assert (connection.access_token, connection.refresh_token) == (
        SECRETS["access"],
        SECRETS["refresh"],
    )
    custobar = Connection.objects.get(pk=custobar.pk)
    assert custobar.access_token == SECRETS["custobar_token"]
    assert custobar.stored_credential("password") == SECRETS["password"]
    assert (
        ClientCredentials.objects.get(pk=credentials.pk).client_secret == SECRETS["client_secret"]
    )


def test_step_6_fails_while_a_value_still_needs_the_removed_key(
    settings: Any, make_connection: Callable[..., Connection]
) -> None:
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [OLD_KEY]
    make_connection()
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [KEY]  # removed without rotating

    with pytest.raises(CommandError) as excinfo:
        call_command("rotate_encryption_keys", stdout=io.StringIO(), stderr=io.StringIO())

    assert excinfo.value.returncode == 1  # manage.py exits with status 1


def test_a_gradual_deploy_can_add_the_new_key_last_first(
    settings: Any, make_connection: Callable[..., Connection]
) -> None:
    # An updated process (new key first) stores a token...
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [KEY, OLD_KEY]
    connection = make_connection(access_token=SECRETS["access"])
    # ... which a process of the first deploy ([old, new]) reads, and one of before can't.
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [OLD_KEY, KEY]
    assert Connection.objects.get(pk=connection.pk).access_token == SECRETS["access"]
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [OLD_KEY]
    with pytest.raises(EncryptionKeyError):
        _ = Connection.objects.get(pk=connection.pk).access_token


# The keys ----------------------------------------------------------------------------------------


def test_the_encrypted_fields_table_is_every_encrypted_field() -> None:
    documented = re.findall(r"^\| `(\w+)\.(\w+)` \|", section("## What is encrypted"), re.M)
    encrypted = [
        (model.__name__, field.name)
        for model in apps.get_app_config("oauth_connect").get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]
    assert sorted(documented) == sorted(encrypted)


def test_the_documented_key_error_is_what_reading_raises(
    settings: Any, make_connection: Callable[..., Connection], organisation: Organisation
) -> None:
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [OLD_KEY]
    connection = make_connection(label="production")
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = [KEY]
    connection = Connection.objects.get(pk=connection.pk)
    assert str(connection)  # listing and naming it needs no key

    with pytest.raises(EncryptionKeyError) as excinfo:
        _ = connection.access_token

    message = str(excinfo.value)
    message = message.replace(f"#{connection.pk}", "#12")
    message = message.replace(f"tenant {organisation.pk}", "tenant 3")
    assert message == page_block("Can't decrypt").strip()
    assert isinstance(excinfo.value, ImproperlyConfigured)


@pytest.mark.parametrize(
    ("keys", "check"), [([], "oauth_connect.E003"), (["not-a-key"], "oauth_connect.E004")]
)
def test_manage_py_check_refuses_a_bad_key_list(settings: Any, keys: list[str], check: str) -> None:
    assert f"(`{check}`)" in (DOCS / PAGE).read_text()
    settings.OAUTH_CONNECT["ENCRYPTION_KEYS"] = keys

    with pytest.raises(SystemCheckError, match=re.escape(check)):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


# What never shows, and what the page admits ------------------------------------------------------


def test_the_session_repr_is_the_pages(make_connection: Callable[..., Connection]) -> None:
    connection = make_connection(label="production", access_token=SECRETS["access"])
    text = repr(connection.session()).replace(f"#{connection.pk}", "#12")
    assert f"(`{text}`)" in (DOCS / PAGE).read_text()
    assert SECRETS["access"] not in text


def test_the_token_stays_on_the_api_host(
    make_connection: Callable[..., Connection], http_mock: responses.RequestsMock
) -> None:
    api = make_connection(access_token=SECRETS["access"]).session()
    http_mock.add(
        responses.GET,
        API_URL + "moved/",
        status=302,
        headers={"Location": "https://elsewhere.test/landing"},
    )

    moved = api.get("moved/")

    # Not followed at all: the 3xx comes back, and elsewhere.test is never asked.
    assert moved.status_code == 302 and moved.headers["Location"].startswith("https://elsewhere")
    [first] = (call.request for call in http_mock.calls)
    assert first.headers["Authorization"] == f"Bearer {SECRETS['access']}"
    with pytest.raises(UnsafeURLError):
        api.get("https://elsewhere.test/collect")


def test_dumpdata_writes_decrypted_values(make_connection: Callable[..., Connection]) -> None:
    make_connection(access_token=SECRETS["access"])
    out = io.StringIO()

    call_command("dumpdata", "oauth_connect.connection", stdout=out)

    assert SECRETS["access"] in out.getvalue()


def unused_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_html_error_reports_can_show_a_token_from_the_http_libraries(
    settings: Any, make_connection: Callable[..., Connection]
) -> None:
    # A network error (nothing listens on the port) raised through connection.session().
    providers = settings.OAUTH_CONNECT["PROVIDERS"]
    port = unused_local_port()
    providers["apicbase"]["API_URL"] = f"http://127.0.0.1:{port}/api/"
    providers["apicbase"]["TOKEN_URL"] = f"http://127.0.0.1:{port}/token/"
    fresh = make_connection(label="fresh", access_token=SECRETS["access"])
    expired = make_connection(
        label="expired",
        refresh_token=SECRETS["refresh"],
        expires_at=timezone.now() - timedelta(minutes=1),
    )

    reports = []
    for connection, raised in [(fresh, requests.ConnectionError), (expired, ProviderError)]:
        with pytest.raises(raised):
            try:
                connection.session().get("accounts/me/")
            except raised:
                reports.append(ExceptionReporter(None, *sys.exc_info()))
                raise

    fresh_report, expired_report = reports
    assert SECRETS["access"] in fresh_report.get_traceback_html()
    assert SECRETS["refresh"] in expired_report.get_traceback_html()
    # The plain-text report has no local variables.
    assert SECRETS["access"] not in fresh_report.get_traceback_text()
    assert SECRETS["refresh"] not in expired_report.get_traceback_text()


def test_a_vulnerability_is_reported_privately() -> None:
    text = section("## Reporting a vulnerability")
    assert "privately" in text and "security advisory" in text

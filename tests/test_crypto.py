"""Encrypted token storage: what reaches the database, key rotation, and what never leaks."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection as db

from example_project.tenants.models import Organisation
from oauth_connect import crypto
from oauth_connect.exceptions import EncryptionKeyError
from oauth_connect.models import ClientCredentials, Connection, ConnectionEvent
from oauth_connect.providers.base import OAuthClient, TokenSet
from tests.conftest import KEY, OLD_KEY, oauth_connect_settings

ACCESS = "access-plaintext-4b1d"
REFRESH = "refresh-plaintext-9c2e"
SECRET = "client-secret-plaintext-77aa"


def use_keys(settings: Any, *keys: str) -> None:
    settings.OAUTH_CONNECT = oauth_connect_settings(ENCRYPTION_KEYS=list(keys))


def stored_tokens(pk: int) -> tuple[str, str]:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, refresh_token FROM oauth_connect_connection WHERE id = %s", [pk]
        )
        return cursor.fetchone()


def stored_secret(pk: int) -> str:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT client_secret FROM oauth_connect_clientcredentials WHERE id = %s", [pk]
        )
        return cursor.fetchone()[0]


def decrypts_with(key: str, ciphertext: str) -> str:
    return Fernet(key.encode()).decrypt(ciphertext.encode()).decode()


@pytest.fixture
def token_connection(make_connection: Callable[..., Connection]) -> Connection:
    return make_connection(access_token=ACCESS, refresh_token=REFRESH)


@pytest.fixture
def credentials(organisation: Organisation) -> ClientCredentials:
    created = ClientCredentials.objects.create(
        tenant=organisation, provider="apicbase", client_id="tenant-client", client_secret=SECRET
    )
    return ClientCredentials.objects.get(pk=created.pk)


# What the database holds ----------------------------------------------------------------------


def test_database_holds_fernet_ciphertext_of_tokens(token_connection: Connection) -> None:
    access, refresh = stored_tokens(token_connection.pk)

    assert ACCESS not in access
    assert REFRESH not in refresh
    assert decrypts_with(KEY, access) == ACCESS
    assert decrypts_with(KEY, refresh) == REFRESH
    assert token_connection.access_token == ACCESS
    assert token_connection.refresh_token == REFRESH


def test_database_holds_fernet_ciphertext_of_client_secret(
    credentials: ClientCredentials,
) -> None:
    stored = stored_secret(credentials.pk)

    assert SECRET not in stored
    assert decrypts_with(KEY, stored) == SECRET
    assert credentials.client_secret == SECRET


def test_same_secret_encrypts_differently_each_time(
    make_connection: Callable[..., Connection],
) -> None:
    first = make_connection(label="one", access_token=ACCESS)
    second = make_connection(label="two", access_token=ACCESS)

    assert stored_tokens(first.pk)[0] != stored_tokens(second.pk)[0]


def test_updating_a_token_stores_new_ciphertext(token_connection: Connection) -> None:
    before = stored_tokens(token_connection.pk)

    token_connection.access_token = "access-rotated"
    token_connection.save()

    access, refresh = stored_tokens(token_connection.pk)
    assert access != before[0]
    assert decrypts_with(KEY, access) == "access-rotated"
    assert Connection.objects.get(pk=token_connection.pk).refresh_token == REFRESH


def test_saving_writes_an_unread_token_back_as_stored(token_connection: Connection) -> None:
    # fields.Ciphertext: "Saving it back writes it unchanged" (no decryption needed to save).
    before = stored_tokens(token_connection.pk)

    token_connection.label = "renamed"
    token_connection.save()

    assert stored_tokens(token_connection.pk) == before


def test_empty_token_stays_empty(make_connection: Callable[..., Connection]) -> None:
    connection = make_connection(access_token="", refresh_token="")

    assert stored_tokens(connection.pk) == ("", "")
    assert connection.access_token == ""
    assert connection.refresh_token == ""


def test_filtering_on_a_token_does_not_find_it_in_plaintext(
    token_connection: Connection,
) -> None:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM oauth_connect_connection WHERE access_token = %s", [ACCESS]
        )
        assert cursor.fetchone()[0] == 0


# Key rotation ----------------------------------------------------------------------------------


def test_values_written_with_old_key_read_after_new_key_is_added(
    settings: Any, make_connection: Callable[..., Connection], organisation: Organisation
) -> None:
    use_keys(settings, OLD_KEY)
    connection = make_connection(access_token=ACCESS, refresh_token=REFRESH)
    secret = ClientCredentials.objects.create(
        tenant=organisation, provider="apicbase", client_id="c", client_secret=SECRET
    )

    use_keys(settings, KEY, OLD_KEY)

    assert not crypto.is_encrypted_with_primary_key(stored_tokens(connection.pk)[0])
    assert Connection.objects.get(pk=connection.pk).access_token == ACCESS
    assert Connection.objects.get(pk=connection.pk).refresh_token == REFRESH
    assert ClientCredentials.objects.get(pk=secret.pk).client_secret == SECRET


def test_new_values_are_encrypted_with_the_first_key(
    settings: Any, make_connection: Callable[..., Connection]
) -> None:
    use_keys(settings, KEY, OLD_KEY)

    connection = make_connection(access_token=ACCESS)

    access = stored_tokens(connection.pk)[0]
    assert crypto.is_encrypted_with_primary_key(access)
    assert decrypts_with(KEY, access) == ACCESS


def test_rotate_encryption_keys_reencrypts_everything_with_the_first_key(
    settings: Any, make_connection: Callable[..., Connection], organisation: Organisation
) -> None:
    use_keys(settings, OLD_KEY)
    first = make_connection(label="one", access_token=ACCESS, refresh_token=REFRESH)
    second = make_connection(label="two", access_token="access-two", refresh_token="")
    secret = ClientCredentials.objects.create(
        tenant=organisation, provider="apicbase", client_id="c", client_secret=SECRET
    )
    before = {
        "first": stored_tokens(first.pk),
        "second": stored_tokens(second.pk),
        "secret": stored_secret(secret.pk),
    }

    use_keys(settings, KEY, OLD_KEY)
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)

    use_keys(settings, KEY)
    after = {
        "first": stored_tokens(first.pk),
        "second": stored_tokens(second.pk),
        "secret": stored_secret(secret.pk),
    }
    assert after["first"][0] != before["first"][0]
    assert after["first"][1] != before["first"][1]
    assert after["second"][0] != before["second"][0]
    assert after["second"][1] == ""
    assert after["secret"] != before["secret"]
    for ciphertext in [*after["first"], after["second"][0], after["secret"]]:
        assert crypto.is_encrypted_with_primary_key(ciphertext)
    assert Connection.objects.get(pk=first.pk).access_token == ACCESS
    assert Connection.objects.get(pk=first.pk).refresh_token == REFRESH
    assert Connection.objects.get(pk=second.pk).access_token == "access-two"
    assert ClientCredentials.objects.get(pk=secret.pk).client_secret == SECRET
    assert "Re-encrypted 4 value(s) in 3 row(s)." in out.getvalue()


# A key removed too early -------------------------------------------------------------------------


@pytest.fixture
def orphaned_connection(settings: Any, make_connection: Callable[..., Connection]) -> Connection:
    """A connection encrypted with OLD_KEY, loaded after OLD_KEY was dropped from settings."""
    use_keys(settings, OLD_KEY)
    connection = make_connection(access_token=ACCESS, refresh_token=REFRESH)
    use_keys(settings, KEY)
    return Connection.objects.get(pk=connection.pk)


def test_reading_a_token_without_its_key_names_the_connection_and_setting(
    orphaned_connection: Connection,
) -> None:
    with pytest.raises(EncryptionKeyError) as excinfo:
        _ = orphaned_connection.access_token

    message = str(excinfo.value)
    assert f"#{orphaned_connection.pk}" in message
    assert "ENCRYPTION_KEYS" in message
    assert "access_token" in message
    assert excinfo.value.connection is orphaned_connection
    ciphertext = stored_tokens(orphaned_connection.pk)[0]
    for secret in (ACCESS, REFRESH, OLD_KEY, KEY, ciphertext):
        assert secret not in message
        assert secret not in repr(excinfo.value)


def test_listing_connections_does_not_decrypt(orphaned_connection: Connection) -> None:
    connections = list(Connection.objects.all())

    assert [c.pk for c in connections] == [orphaned_connection.pk]
    assert connections[0].provider == "apicbase"
    assert str(connections[0])
    assert repr(connections[0])


def test_a_connection_whose_key_is_gone_can_still_be_saved(
    orphaned_connection: Connection,
) -> None:
    before = stored_tokens(orphaned_connection.pk)

    orphaned_connection.label = "renamed"
    orphaned_connection.save()

    assert Connection.objects.get(pk=orphaned_connection.pk).label == "renamed"
    assert stored_tokens(orphaned_connection.pk) == before


def test_rotation_with_an_undecryptable_row_fails_and_leaves_it_unchanged(
    orphaned_connection: Connection, make_connection: Callable[..., Connection]
) -> None:
    readable = make_connection(label="readable", access_token="access-ok", refresh_token="")
    orphan_before = stored_tokens(orphaned_connection.pk)
    readable_before = stored_tokens(readable.pk)
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("rotate_encryption_keys", stdout=out, stderr=err)

    assert stored_tokens(orphaned_connection.pk) == orphan_before
    # The row that could be re-encrypted was, and still reads back.
    assert stored_tokens(readable.pk)[0] != readable_before[0]
    assert Connection.objects.get(pk=readable.pk).access_token == "access-ok"
    assert f"#{orphaned_connection.pk}" in err.getvalue()
    assert "2 value(s)" in str(excinfo.value)
    for text in (out.getvalue(), err.getvalue(), str(excinfo.value)):
        assert ACCESS not in text
        assert REFRESH not in text


# Nothing prints a secret -------------------------------------------------------------------------


def test_connection_repr_and_str_hide_tokens(token_connection: Connection) -> None:
    assert token_connection.access_token == ACCESS  # decrypted and cached on the instance
    ciphertext = stored_tokens(token_connection.pk)[0]

    for text in (repr(token_connection), str(token_connection)):
        assert ACCESS not in text
        assert REFRESH not in text
        assert ciphertext not in text
    assert f"#{token_connection.pk}" in repr(token_connection)


def test_client_credentials_repr_and_str_hide_secret(credentials: ClientCredentials) -> None:
    assert credentials.client_secret == SECRET

    for text in (repr(credentials), str(credentials)):
        assert SECRET not in text
        assert "tenant-client" in text


def test_token_set_repr_hides_tokens() -> None:
    tokens = TokenSet(access_token=ACCESS, refresh_token=REFRESH, scopes=["accounts"])

    for text in (repr(tokens), str(tokens)):
        assert ACCESS not in text
        assert REFRESH not in text
        assert "accounts" in text


def test_oauth_client_repr_hides_secret() -> None:
    client = OAuthClient("some-client-id", SECRET, "tenant")

    for text in (repr(client), str(client)):
        assert SECRET not in text
        assert "some-client-id" in text


# The event log -----------------------------------------------------------------------------------


def test_connection_events_are_append_only(token_connection: Connection) -> None:
    event = ConnectionEvent.objects.create(
        connection=token_connection, kind=ConnectionEvent.Kind.REFRESHED, message="first"
    )
    event.message = "rewritten"

    with pytest.raises(ValueError, match="append-only"):
        event.save()
    loaded = ConnectionEvent.objects.get(pk=event.pk)
    loaded.message = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        loaded.save()

    assert ConnectionEvent.objects.get(pk=event.pk).message == "first"


def test_admin_pages_work_for_a_connection_whose_key_is_gone(
    admin_client: Any, orphaned_connection: Connection
) -> None:
    from django.urls import reverse

    changelist = admin_client.get(reverse("admin:oauth_connect_connection_changelist"))
    change = admin_client.get(
        reverse("admin:oauth_connect_connection_change", args=[orphaned_connection.pk])
    )
    assert (changelist.status_code, change.status_code) == (200, 200)


def test_refresh_tokens_reports_a_connection_whose_key_is_gone(
    orphaned_connection: Connection,
) -> None:
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    Connection.objects.filter(pk=orphaned_connection.pk).update(
        expires_at=timezone.now() + timedelta(minutes=1)
    )
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("refresh_tokens", stdout=out)
    assert exit_info.value.code == 1
    line = out.getvalue()
    assert f"#{orphaned_connection.pk}: failed" in line and "ENCRYPTION_KEYS" in line
    assert "Traceback" not in line

"""Refresh a connection's tokens with exactly one call to the provider, however many threads,
processes or hosts find the same expired token at once.

How: the refresh runs while holding the connection's database row lock (``SELECT ... FOR
UPDATE``), and re-checks under the lock whether it is still needed. The first worker refreshes
and commits the rotated tokens; the others wait on the lock, then find fresh tokens and use them.
A worker killed mid-refresh loses its database connection, so the lock is released and the next
worker proceeds. On databases without row locks (SQLite) a per-process lock serialises threads,
which makes SQLite correct for one server process; see the README's "Databases" section.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar, cast

from .. import conf
from .._internal.redact import printable
from ..exceptions import (
    AwaitingReauthorization,
    ConnectionUnavailable,
    OAuthConnectError,
    ProviderError,
    ReauthorizationRequired,
    TokensNotStored,
    UnsupportedOperation,
    UnusableAnswer,
)
from ..models import Connection, ConnectionEvent
from ..providers.base import OAuthClient, Provider, TokenSet
from ..providers.client import ProviderClient
from .credentials import oauth_client_for
from .events import record_event
from .locking import locked_connection
from .store import save_status, set_failed, store_refreshed
from .validation import check_tokens

Status = Connection.Status
ProviderErrorT = TypeVar("ProviderErrorT", bound=ProviderError)
Kind = ConnectionEvent.Kind


def refresh_connection(
    connection: Connection, force: bool = False, *, due_within: timedelta | None = None
) -> bool:
    """Refresh ``connection`` if its access token expires within ``due_within`` (default: the
    ``REFRESH_LEEWAY`` setting), or always with ``force=True``.

    Returns True when this call got new tokens, False when none were needed (not due, or another
    worker just refreshed). Either way ``connection`` is updated in place with the stored state.
    Raises ``ReauthorizationRequired`` when the provider refuses the grant and ``ProviderError``
    for any other provider failure; the connection's status records which.
    """
    within = conf.refresh_leeway() if due_within is None else due_within
    return refresh_when(connection, lambda current: force or current.refresh_due(within))


def refresh_rejected_token(connection: Connection, rejected_access_token: str) -> bool:
    """Refresh after the API rejected ``rejected_access_token`` (a 401), unless another worker
    has already replaced it, in which case ``connection`` just picks up the new token."""
    return refresh_when(
        connection,
        lambda current: current.access_token == rejected_access_token,
        token_rejected=True,
    )


def refresh_when(
    connection: Connection,
    should_refresh: Callable[[Connection], bool],
    *,
    token_rejected: bool = False,
) -> bool:
    """Refresh ``connection`` if ``should_refresh(current)`` says so, where ``current`` is the
    connection as stored, read under the row lock. The general form of the functions above.

    Raises ``ConnectionUnavailable`` for a disconnected connection and ``AwaitingReauthorization``
    for one already waiting for a person, without calling the provider. ``token_rejected``
    says the API refused the access token: with nothing to refresh it with, that needs a person.
    """
    failure: OAuthConnectError | None = None
    refreshed = False
    with locked_connection(connection.pk) as current:
        try:
            refreshed = _refresh_locked(current, should_refresh, token_rejected)
        except AwaitingReauthorization:
            raise
        except ReauthorizationRequired as err:
            _mark_reauth_required(current, _naming(err, current))
            failure = err
        except UnusableAnswer as err:
            if not err.recorded:
                _mark_failed(current, _naming(err, current))
            failure = err
        except ProviderError as err:
            _mark_failed(current, _naming(err, current))
            failure = err
        except TokensNotStored as err:
            # Already marked; leaving the block normally commits that mark. The caller still
            # gets the new tokens in memory, so this process can go on using them.
            failure = err
    _copy_state(current, connection)
    if failure is not None:
        raise failure
    return refreshed


def _refresh_locked(
    current: Connection, should_refresh: Callable[[Connection], bool], token_rejected: bool
) -> bool:
    provider = refreshable_provider(current, should_refresh, token_rejected=token_rejected)
    if provider is None:
        return False
    oauth_client = oauth_client_for(provider, current.tenant_id, issued_to=current.client_id)
    try:
        tokens = ask_provider(provider, current, oauth_client)
    except ReauthorizationRequired:
        if rotated_elsewhere(current):
            return False
        raise
    tokens = _usable(tokens, provider, current)
    if token_rejected and tokens.access_token == current.access_token:
        # The provider hands back the very token its API just refused (Custobar returns the
        # current token): the refusal is about something else, e.g. permissions. Fail and back
        # off, rather than check the credentials again on every request.
        raise ProviderError(
            f"The {provider.display_name} API refused a token that {provider.display_name} "
            "still reports as current: check the account's permissions.",
            connection=current,
        )
    store_refreshed(current, tokens)
    return True


def refreshable_provider(
    current: Connection,
    should_refresh: Callable[[Connection], bool],
    *,
    token_rejected: bool = False,
) -> Provider | None:
    """The provider to refresh ``current`` (read under its lock) with, or None when no refresh
    is needed. Raises ``ConnectionUnavailable`` (disconnected), ``AwaitingReauthorization``
    (waiting for a person already) or ``ReauthorizationRequired`` (nothing to refresh with)."""
    if current.status == Status.DISCONNECTED:
        raise ConnectionUnavailable(
            "It is disconnected. Connect it again from the Connections page.",
            connection=current,
        )
    if current.status == Status.REAUTH_REQUIRED:
        # Deliberately not re-marked: the provider already refused this grant.
        raise AwaitingReauthorization(needs_reauth_message(current), connection=current)
    if not should_refresh(current):
        return None
    provider = current.get_provider()
    if not provider.can_refresh(current):
        if not (token_rejected or current.expires_within(timedelta(0))):
            return None  # nothing to refresh with, but the token still works
        raise ReauthorizationRequired(
            f"{provider.display_name} no longer accepts the token, and nothing is stored to get "
            "a new one with (no refresh token or password). Someone must reconnect.",
            connection=current,
        )
    return provider


def ask_provider(
    provider: Provider, current: Connection, oauth_client: OAuthClient | None
) -> TokenSet:
    """The provider's answer to a refresh of ``current``, as sent: not yet checked or stored.
    Touches no database, so the batched refresh runs it on threads that hold no connection."""
    client = ProviderClient(provider.provider_id, connection=current)
    try:
        tokens = provider.refresh(client, current, oauth_client)
    except ProviderError as err:
        _naming(err, current)
        raise
    except OAuthConnectError:
        raise
    except Exception as err:
        # A provider class's bug must still leave the connection in a known state.
        raise ProviderError(
            f"{type(provider).__name__}.refresh() failed unexpectedly ({type(err).__name__}).",
            connection=current,
        ) from err
    if not isinstance(tokens, TokenSet):
        raise ProviderError(
            f"{type(provider).__name__}.refresh() returned {type(tokens).__name__}, not a "
            "TokenSet.",
            connection=current,
        )
    return tokens


def checked_answer(
    tokens: TokenSet, provider: Provider, current: Connection
) -> tuple[TokenSet | None, UnusableAnswer | None]:
    """What of a refresh's answer to store, and the failure when it is unusable. When only one
    of the two tokens is unusable, the other is stored (with the failure), since a rotating
    provider has just spent the refresh token we hold: see docs/reliability.md."""
    checked = check_tokens(tokens, provider)
    if checked.usable:
        return checked.noted_tokens, None
    salvaged = checked.salvage(current)
    if salvaged is None:
        kept = "Nothing of it was stored; the stored tokens are kept."
    elif checked.access_problem:
        kept = "Its new refresh token was stored (the access token kept is the previous one)."
    else:
        kept = (
            "Its new access token was stored; the stored refresh token is kept, and a provider "
            "that rotates refresh tokens will refuse it at the next refresh."
        )
    failure = UnusableAnswer(
        f"{provider.display_name} answered the refresh with tokens that can't be used: "
        f"{checked.problem}. {kept}",
        connection=current,
    )
    return salvaged, failure


def _usable(tokens: TokenSet, provider: Provider, current: Connection) -> TokenSet:
    """``tokens`` fit to store, or an ``UnusableAnswer`` (recorded with what was salvaged)."""
    to_store, failure = checked_answer(tokens, provider, current)
    if failure is not None:
        if to_store is not None:
            store_refreshed(current, to_store, failure=failure)
            failure.recorded = True
        raise failure
    return cast(TokenSet, to_store)  # a usable answer always has tokens to store


def _naming(err: ProviderErrorT, connection: Connection) -> ProviderErrorT:
    # Providers parse answers without knowing the connection; every error names it all the same.
    if err.connection is None:
        err.connection = connection
    return err


def needs_reauth_message(connection: Connection) -> str:
    """What to tell whoever meets a connection that needs reauthorization: why (the recorded
    error), and what to do, said once (most recorded reasons already end with it)."""
    reason = connection.last_error.strip()
    if not reason:
        return "It needs reauthorization: someone must reconnect it."
    if "must reconnect" not in reason.lower():
        reason = f"{reason.rstrip('.')}. Someone must reconnect it."
    return f"It needs reauthorization: {reason}"


def rotated_elsewhere(current: Connection) -> bool:
    """Before declaring the grant dead, re-read the row: a worker that doesn't take our lock
    (another deployment, a script) may have just rotated the refresh token. If so, adopt its
    tokens instead."""
    latest = Connection.objects.using(current._state.db).get(pk=current.pk)
    if latest.refresh_token == current.refresh_token or latest.status != Status.ACTIVE:
        return False
    _copy_state(latest, current)
    return True


def rotate_token(connection: Connection) -> None:
    """Have the provider replace the connection's token with a new one (e.g. Custobar's
    "new access token") and store it atomically. The old token stops working at once.

    Raises ``UnsupportedOperation`` when the provider can't rotate, ``ReauthorizationRequired``
    when it refuses the stored credentials (the connection is then ``reauth_required``), and
    ``ProviderError`` for anything else: the stored token is kept and the failure recorded. (If
    the provider rotated but its answer was lost, the stored token was invalidated; the next
    401 fetches the current one, for providers that can.)
    """
    if not connection.get_provider().supports_rotation:
        raise UnsupportedOperation(
            f"{connection.provider_name} tokens can't be rotated on demand.", connection=connection
        )
    failure: OAuthConnectError | None = None
    with locked_connection(connection.pk) as current:
        if current.status == Status.DISCONNECTED:
            raise ConnectionUnavailable(
                "It is disconnected. Connect it again from the Connections page.",
                connection=current,
            )
        provider = current.get_provider()
        client = ProviderClient(provider.provider_id, connection=current)
        try:
            tokens = provider.rotate(client, current)
            checked = check_tokens(tokens, provider)
            if not checked.usable:
                raise UnusableAnswer(
                    f"{provider.display_name} answered the rotation with a token that can't be "
                    f"used: {checked.problem}. The stored token is kept, though the provider may "
                    "have invalidated it; the next refused call fetches the current one.",
                    connection=current,
                )
            tokens = checked.noted_tokens
        except ReauthorizationRequired as err:
            _mark_reauth_required(current, err)
            failure = err
        except ProviderError as err:
            record_event(current, Kind.REFRESH_FAILED, f"Rotation failed: {err.detail}", error=err)
            failure = err
        else:
            try:
                store_refreshed(current, tokens, Kind.ROTATED)
            except TokensNotStored as err:
                failure = err  # already marked; leaving the block normally commits the mark
    _copy_state(current, connection)
    if failure is not None:
        raise failure


# State changes --------------------------------------------------------------------------------


def _mark_failed(current: Connection, err: ProviderError) -> None:
    set_failed(current, err)
    save_status(current, "consecutive_failures")
    record_event(current, Kind.REFRESH_FAILED, err.detail, error=err)


def _mark_reauth_required(current: Connection, err: ReauthorizationRequired) -> None:
    set_reauth_required(current, err)
    save_status(current)
    record_event(current, Kind.REAUTH_REQUIRED, err.detail, error=err)


def set_reauth_required(current: Connection, err: ReauthorizationRequired) -> None:
    """Mark ``current`` (in memory) as waiting for a person to reconnect it."""
    current.status = Status.REAUTH_REQUIRED
    current.last_error = printable(err.detail)
    current.retry_not_before = None


def _copy_state(source: Connection, target: Connection) -> None:
    if source is target:
        return
    for field in Connection._meta.concrete_fields:
        if field.attname in source.__dict__:
            target.__dict__[field.attname] = source.__dict__[field.attname]

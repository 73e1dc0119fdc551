"""The provider contract: what every provider declares, and the hooks it may override."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.utils import timezone

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

    from ..models import Connection
    from .client import ProviderClient


# Ten years: anything longer is a provider bug, not a lifetime.
MAX_LIFETIME_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class TokenSet:
    """What a provider issued. ``refresh_token=None`` means "none sent: keep the one we have";
    ``scopes=None`` means "not stated: keep what we know". Expiries are on our own clock."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    scopes: list[str] | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    #: Something the event log should say about how these tokens were obtained.
    note: str = ""


@dataclass(frozen=True)
class CredentialField:
    """One thing a person types to connect a credential provider (username, password...)."""

    name: str
    label: StrOrPromise  # lazily translated, usually
    required: bool = True
    #: A secret is never shown again, and stored (encrypted) only if the operator keeps it.
    secret: bool = False
    help_text: StrOrPromise = ""


@dataclass(frozen=True)
class CredentialGrant:
    """What connecting with credentials produced: the tokens, the non-secret account details
    shown to people (``account``), and the secrets a later refresh needs again (``secrets``)."""

    tokens: TokenSet
    account: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class OAuthClient:
    """An OAuth client id and secret; ``source`` says where they came from, for messages."""

    client_id: str
    client_secret: str = field(repr=False)
    source: str = "settings"


def expiry_from_lifetime(seconds: Any) -> datetime | None:
    """An absolute expiry from a lifetime in seconds, on our clock (providers' clocks drift).

    None (unknown: refresh on the first 401) for a lifetime that is missing, negative, not a
    number or absurdly long. Never raises: by the time we parse this, a rotating provider has
    already invalidated our old refresh token, so the new tokens must be stored whatever it is.
    """
    if isinstance(seconds, bool):  # JSON's true is no number of seconds (float(True) is 1.0)
        return None
    try:
        lifetime = float(seconds)
        if not 0 <= lifetime <= MAX_LIFETIME_SECONDS:
            return None
        return timezone.now() + timedelta(seconds=lifetime)
    except (TypeError, ValueError, OverflowError):
        return None


class Provider:
    """Base class of every provider. Subclasses set the class attributes and implement
    :meth:`refresh`; they are registered with :func:`oauth_connect.providers.registry.register`.

    An instance is cheap and made per use from the settings in force, so settings overrides apply.
    """

    #: The provider id used in settings and URLs (``"apicbase"``).
    id: ClassVar[str]
    #: What users read ("Apicbase").
    name: ClassVar[str]
    #: Setting keys this provider understands, with their defaults. A key missing here is a typo.
    default_settings: ClassVar[dict[str, Any]] = {
        "NAME": None,
        "API_URL": None,
        "CLASS": None,
        # A cheap authenticated GET (relative to the API URL) for the admin's Test connection.
        "CHECK_PATH": None,
    }
    #: Setting keys a working configuration must set.
    required_settings: ClassVar[tuple[str, ...]] = ("API_URL",)
    #: The Authorization header scheme for API calls.
    header_scheme: ClassVar[str] = "Bearer"
    #: API statuses that mean "this access token is no longer accepted": refresh once and retry.
    expired_token_statuses: ClassVar[frozenset[int]] = frozenset({401})
    #: True when users connect through a redirect to the provider (OAuth2 authorization code).
    uses_redirect: ClassVar[bool] = False
    #: What a person types to connect, for providers that exchange credentials for tokens.
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()
    #: Whether :meth:`rotate` can replace the token on demand.
    supports_rotation: ClassVar[bool] = False

    def __init__(self, provider_id: str, settings: Mapping[str, Any] | None = None) -> None:
        self.provider_id = provider_id
        self.settings = {**self.default_settings, **(settings or {})}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.provider_id!r}>"

    @property
    def display_name(self) -> str:
        return self.settings.get("NAME") or getattr(self, "name", None) or self.provider_id

    def setting(self, key: str) -> Any:
        """A required setting, or a ``ConfigurationError`` naming where to set it."""
        value = self.settings.get(key)
        if value in (None, ""):
            raise ConfigurationError(
                f'Set OAUTH_CONNECT["PROVIDERS"]["{self.provider_id}"]["{key}"].',
                provider=self.provider_id,
            )
        return value

    def api_base_url(self, connection: Connection) -> str:
        """The URL relative API paths resolve against (per connection where the API is)."""
        return str(self.setting("API_URL"))

    def authorization_header(self, access_token: str) -> str:
        return f"{self.header_scheme} {access_token}"

    def can_refresh(self, connection: Connection) -> bool:
        """Whether :meth:`refresh` has what it needs (e.g. a refresh token)."""
        return bool(connection.refresh_token)

    def refresh(
        self, client: ProviderClient, connection: Connection, oauth_client: OAuthClient | None
    ) -> TokenSet:
        """Get a fresh token set for ``connection``.

        Raise :class:`~oauth_connect.exceptions.ReauthorizationRequired` when the provider refuses
        the grant, another :class:`~oauth_connect.exceptions.ProviderError` for anything else.
        Never store anything: the service layer does that, atomically.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement refresh()")

    def connect_with_credentials(
        self, client: ProviderClient, credentials: dict[str, str]
    ) -> CredentialGrant:
        """Exchange what a person typed (``credential_fields``, validated) for tokens.

        Raise :class:`~oauth_connect.exceptions.ReauthorizationRequired` when the provider
        refuses the credentials, another ``ProviderError`` for anything else.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement connect_with_credentials() to connect "
            "without a redirect"
        )

    def rotate(self, client: ProviderClient, connection: Connection) -> TokenSet:
        """Replace the connection's token with a new one at the provider (``supports_rotation``).
        Same errors as :meth:`refresh`."""
        raise NotImplementedError(f"{type(self).__name__} must implement rotate()")

    def revoke(
        self, client: ProviderClient, connection: Connection, oauth_client: OAuthClient | None
    ) -> bool:
        """Tell the provider to revoke the connection's tokens. Return False when the provider
        has no way to do that. Called on disconnect; a failure doesn't stop the disconnect."""
        return False

    def introspect(
        self, client: ProviderClient, connection: Connection, oauth_client: OAuthClient | None
    ) -> bool | None:
        """Whether the provider calls the connection's access token active (e.g. RFC 7662
        introspection), or None when it offers no way to ask."""
        return None

    def describe_account(self, connection: Connection) -> str:
        """The connected account in a few words, for people (cards, admin)."""
        return str((connection.account or {}).get("username") or "")

    def check_settings(self) -> list[str]:
        """Problems with this provider's settings beyond missing keys, each saying what to set
        (reported by the system check ``oauth_connect.E013``)."""
        return []

    def needs_oauth_client(self) -> bool:
        """Whether this provider authenticates with an OAuth client id/secret."""
        return False

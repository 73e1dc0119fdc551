"""A standard OAuth 2.0 authorization-code provider (RFC 6749, PKCE per RFC 7636, revocation
per RFC 7009). Configure one purely from settings, or subclass it for an API with quirks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode

from django.views.decorators.debug import sensitive_variables

from ..exceptions import ConfigurationError, ProviderError
from .base import OAuthClient, Provider, TokenSet, expiry_from_lifetime

if TYPE_CHECKING:
    from ..models import Connection
    from .client import ProviderClient

CLIENT_AUTH_METHODS = ("body", "basic")


class OAuth2Provider(Provider):
    """Authorization code flow with refresh tokens. Every endpoint is a setting."""

    id = "oauth2"
    # No ``name``: a provider configured by settings alone is called by its NAME setting, or else
    # by its id ("acme"), never by the protocol ("OAuth 2.0"), which tells people nothing.
    uses_redirect = True
    default_settings: ClassVar[dict[str, Any]] = {
        **Provider.default_settings,
        "CLIENT_ID": None,
        "CLIENT_SECRET": None,
        # True when every tenant brings its own client (ClientCredentials) and settings have none.
        "TENANT_CREDENTIALS_ONLY": False,
        "SCOPES": [],
        "SCOPE_SEPARATOR": " ",
        "AUTHORIZE_URL": None,
        "TOKEN_URL": None,
        "REVOKE_URL": None,
        "INTROSPECT_URL": None,
        # "body": client_id/client_secret in the form; "basic": HTTP basic (RFC 6749 §2.3.1).
        "CLIENT_AUTH": "body",
        "PKCE": True,
        "EXTRA_AUTHORIZE_PARAMS": {},
        # Absolute callback URL when the one built from the request is not what the provider
        # has registered (e.g. behind a proxy).
        "REDIRECT_URI": None,
    }
    required_settings = ("AUTHORIZE_URL", "TOKEN_URL", "API_URL")

    def needs_oauth_client(self) -> bool:
        return True

    @property
    def scopes(self) -> list[str]:
        scopes = self.settings.get("SCOPES") or []
        return scopes.split() if isinstance(scopes, str) else list(scopes)

    # Authorization ----------------------------------------------------------------------------

    def authorization_url(
        self, *, oauth_client: OAuthClient, redirect_uri: str, state: str, code_challenge: str
    ) -> str:
        params: dict[str, str] = {
            "response_type": "code",
            "client_id": oauth_client.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
        }
        if self.scopes:
            params["scope"] = self.settings["SCOPE_SEPARATOR"].join(self.scopes)
        if self.settings.get("PKCE"):
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        params.update(self.settings.get("EXTRA_AUTHORIZE_PARAMS") or {})
        url = str(self.setting("AUTHORIZE_URL"))
        return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"

    @sensitive_variables()
    def exchange_code(
        self,
        client: ProviderClient,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        oauth_client: OAuthClient,
    ) -> TokenSet:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if self.settings.get("PKCE"):
            data["code_verifier"] = code_verifier
        body = self._token_request(client, data, oauth_client)
        return self.parse_token_response(body, requested_scopes=self.scopes)

    def account_for(self, client: ProviderClient, tokens: TokenSet) -> dict[str, Any]:
        """Who a new grant is for, for people to read (``{"username": ...}``, shown on the
        card and in the admin), when the API says; ``{}`` when it doesn't. Asked once, after
        the code exchange. Raising costs nothing but the name: the connection is stored."""
        return {}

    # Refresh and revoke -----------------------------------------------------------------------

    def refresh_params(self, connection: Connection) -> dict[str, str]:
        """The form fields of a refresh request, client authentication aside."""
        return {"grant_type": "refresh_token", "refresh_token": connection.refresh_token}

    @sensitive_variables()
    def refresh(
        self, client: ProviderClient, connection: Connection, oauth_client: OAuthClient | None
    ) -> TokenSet:
        if oauth_client is None:
            raise ConfigurationError(
                f"No OAuth client to refresh {self.provider_id} tokens with.",
                connection=connection,
            )
        body = self._token_request(client, self.refresh_params(connection), oauth_client)
        return self.parse_token_response(body, requested_scopes=None)

    @sensitive_variables()
    def revoke(
        self, client: ProviderClient, connection: Connection, oauth_client: OAuthClient | None
    ) -> bool:
        url = self.settings.get("REVOKE_URL")
        if not url or oauth_client is None:
            return False
        # Revoking the refresh token revokes the access tokens issued from it (RFC 7009 §2.1).
        for token, hint in (
            (connection.refresh_token, "refresh_token"),
            (connection.access_token, "access_token"),
        ):
            if token:
                data, auth = self._authenticate(
                    {"token": token, "token_type_hint": hint}, oauth_client
                )
                answer = client.send(
                    "POST", url, what="revocation endpoint", secrets=[token], data=data, auth=auth
                )
                # RFC 7009 §2.2: the server answers 200. A redirect (not followed: it would
                # carry the token elsewhere) revoked nothing, whatever it promises.
                if not 200 <= answer.status_code < 300:
                    raise client.error(
                        ProviderError,
                        f"{client.where('revocation endpoint', url)} answered HTTP "
                        f"{answer.status_code}, so the tokens may still be valid there.",
                        status_code=answer.status_code,
                    )
                return True
        return False

    def introspect(
        self, client: ProviderClient, connection: Connection, oauth_client: OAuthClient | None
    ) -> bool | None:
        """Whether the provider calls the access token active (RFC 7662), or None without an
        ``INTROSPECT_URL``."""
        url = self.settings.get("INTROSPECT_URL")
        if not url or oauth_client is None:
            return None
        data, auth = self._authenticate(
            {"token": connection.access_token, "token_type_hint": "access_token"}, oauth_client
        )
        body = client.post_form(str(url), data, auth=auth, what="introspection endpoint")
        return body.get("active") is True

    # Hooks and helpers ------------------------------------------------------------------------

    def parse_token_response(
        self, body: dict[str, Any], *, requested_scopes: list[str] | None
    ) -> TokenSet:
        """Turn a token endpoint's JSON object into a :class:`TokenSet` (RFC 6749 §5.1)."""
        access_token = body.get("access_token")
        refresh_token = body.get("refresh_token")
        if not (isinstance(access_token, str) and access_token) and not isinstance(
            refresh_token, str
        ):
            raise ProviderError(
                f"The {self.provider_id} token endpoint answered without an access_token.",
                provider=self.provider_id,
            )
        scope = body.get("scope")
        if isinstance(scope, str):
            scopes: list[str] | None = scope.replace(",", " ").split()
        else:
            # RFC 6749 §5.1: an omitted scope means "as requested".
            scopes = requested_scopes
        token_type = str(body.get("token_type") or "Bearer")
        return TokenSet(
            # What can't be a token becomes "", which the service layer's check refuses while
            # storing the other token of a rotation (the provider has spent ours by now).
            access_token=access_token if isinstance(access_token, str) else "",
            # None: none sent, keep ours. Something that is not a string is no refresh token.
            refresh_token=(
                refresh_token if refresh_token is None or isinstance(refresh_token, str) else ""
            ),
            token_type="Bearer" if token_type.lower() == "bearer" else token_type,
            scopes=scopes,
            expires_at=expiry_from_lifetime(body.get("expires_in")),
        )

    @sensitive_variables()
    def _authenticate(
        self, data: dict[str, str], oauth_client: OAuthClient
    ) -> tuple[dict[str, str], tuple[str, str] | None]:
        if self.settings.get("CLIENT_AUTH") == "basic":
            return data, (oauth_client.client_id, oauth_client.client_secret)
        return {
            **data,
            "client_id": oauth_client.client_id,
            "client_secret": oauth_client.client_secret,
        }, None

    @sensitive_variables()
    def _token_request(
        self, client: ProviderClient, data: dict[str, str], oauth_client: OAuthClient
    ) -> dict[str, Any]:
        data, auth = self._authenticate(data, oauth_client)
        return client.post_form(str(self.setting("TOKEN_URL")), data, auth=auth)

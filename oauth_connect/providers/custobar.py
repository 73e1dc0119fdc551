"""Custobar: a username and password (HTTP basic) exchanged for an API token.

Custobar's API documentation (authentication overview): each customer has its own base URL,
``https://COMPANY.custobar.com``. ``GET /api/auth/access-token/`` with basic auth returns the one
valid token of the user, ``{"token": "..."}``; ``POST /api/auth/new-access-token/`` invalidates it
and returns a new one. Requests send ``Authorization: Token <token>``. Tokens don't expire; a 401
means it was rotated or revoked elsewhere. "Do not create a new access token for each request."
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from ..exceptions import InvalidCredentials, ProviderError, UnsupportedOperation
from .base import CredentialField, CredentialGrant, Provider, TokenSet
from .registry import register

if TYPE_CHECKING:
    from ..models import Connection
    from .client import ProviderClient

# Basic auth against the token endpoints: 401/403 mean the username or password is wrong.
REFUSED = frozenset({401, 403})
COMPANY = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


@register
class CustobarProvider(Provider):
    id = "custobar"
    name = "Custobar"
    header_scheme = "Token"
    supports_rotation = True
    default_settings: ClassVar[dict[str, Any]] = {
        **Provider.default_settings,
        # Where each customer's API lives; {company} is what the tenant types.
        "BASE_URL": "https://{company}.custobar.com/",
        "CHECK_PATH": "api/customers/",
    }
    required_settings = ("BASE_URL",)
    credential_fields = (
        CredentialField(
            "company",
            _("Company domain or base URL"),
            help_text=_("e.g. acme, acme.custobar.com or https://acme.custobar.com"),
        ),
        CredentialField("username", _("Username")),
        CredentialField("password", _("Password"), secret=True),
    )

    def check_settings(self) -> list[str]:
        if "{company}" not in str(self.settings.get("BASE_URL") or ""):
            return [
                f'OAUTH_CONNECT["PROVIDERS"]["{self.provider_id}"]["BASE_URL"] must contain '
                '{company}, e.g. "https://{company}.custobar.com/".'
            ]
        return []

    # Connecting -------------------------------------------------------------------------------

    @sensitive_variables()
    def connect_with_credentials(
        self, client: ProviderClient, credentials: dict[str, str]
    ) -> CredentialGrant:
        company, base_url = self.resolve_company(credentials["company"])
        if ":" in credentials["username"]:
            # RFC 7617 §2: HTTP basic separates the user-id from the password with the first
            # colon, so a user-id can't have one.
            raise InvalidCredentials(
                gettext(
                    "A username with “:” can't be sent to Custobar, whose API takes it with "
                    "HTTP basic authentication. Check the username."
                ),
                field="username",
                provider=self.provider_id,
            )
        auth = (credentials["username"], credentials["password"])
        token = self._token(client, "GET", base_url + "api/auth/access-token/", auth)
        return CredentialGrant(
            tokens=token,
            account={"company": company, "base_url": base_url, "username": auth[0]},
            secrets={"password": auth[1]},
        )

    def resolve_company(self, value: str) -> tuple[str, str]:
        """``(company, base URL)`` from what the tenant typed. Only URLs of the ``BASE_URL``
        shape are accepted, so a tenant can't make us send credentials to any other host."""
        template = str(self.setting("BASE_URL"))
        pattern = re.escape(template).replace(re.escape("{company}"), f"(?P<company>{COMPANY})")
        value = value.strip().lower()
        for candidate in (value, f"https://{value}", template.format(company=value)):
            candidate = candidate if candidate.endswith("/") else candidate + "/"
            match = re.fullmatch(pattern, candidate)
            if match:
                company = match.group("company")
                return company, template.format(company=company)
        raise InvalidCredentials(
            gettext(
                # Translators: %(value)s is what was typed, quoted; %(example)s is a URL.
                "%(value)s is not a Custobar company: give its domain (acme.custobar.com), its "
                "name (acme) or its base URL (%(example)s)."
            )
            % {"value": repr(value), "example": template.format(company="acme")},
            field="company",
            provider=self.provider_id,
        )

    def describe_account(self, connection: Connection) -> str:
        account = connection.account or {}
        return f"{account.get('username', '')} @ {account.get('company', '')}"

    # Using and refreshing ---------------------------------------------------------------------

    def api_base_url(self, connection: Connection) -> str:
        return str(connection.account.get("base_url") or self.setting("BASE_URL"))

    def can_refresh(self, connection: Connection) -> bool:
        return connection.has_stored_credentials

    @sensitive_variables()
    def refresh(
        self, client: ProviderClient, connection: Connection, oauth_client: Any
    ) -> TokenSet:
        # The token has no expiry: "refresh" means fetching the one valid token again, after a
        # 401 says ours was rotated elsewhere. Never a new token (the vendor asks not to).
        return self._token(
            client, "GET", self._url(connection, "access-token"), self._auth(connection)
        )

    @sensitive_variables()
    def rotate(self, client: ProviderClient, connection: Connection) -> TokenSet:
        if not connection.has_stored_credentials:
            raise UnsupportedOperation(
                "Rotating a Custobar token needs the password, which was not kept. Rotate it in "
                "Custobar and reconnect, or reconnect keeping the password.",
                connection=connection,
            )
        return self._token(
            client, "POST", self._url(connection, "new-access-token"), self._auth(connection)
        )

    # Helpers ----------------------------------------------------------------------------------

    def _url(self, connection: Connection, endpoint: str) -> str:
        return f"{self.api_base_url(connection)}api/auth/{endpoint}/"

    def _auth(self, connection: Connection) -> tuple[str, str]:
        return (
            str(connection.account.get("username", "")),
            connection.stored_credential("password"),
        )

    @sensitive_variables()
    def _token(
        self, client: ProviderClient, method: str, url: str, auth: tuple[str, str]
    ) -> TokenSet:
        body = client.request_json(method, url, auth=auth, what="token endpoint", refused=REFUSED)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ProviderError(
                "The Custobar token endpoint answered without a token.", provider=self.provider_id
            )
        return TokenSet(access_token=token, token_type="Token")  # noqa: S106 - a scheme name

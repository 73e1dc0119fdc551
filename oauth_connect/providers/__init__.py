"""Providers: one module each, registered on import of this package."""

from . import apicbase, custobar, teletracker  # noqa: F401  (register the built-ins)
from .base import CredentialField, CredentialGrant, OAuthClient, Provider, TokenSet
from .oauth2 import OAuth2Provider
from .registry import register

__all__ = [
    "CredentialField",
    "CredentialGrant",
    "OAuth2Provider",
    "OAuthClient",
    "Provider",
    "TokenSet",
    "register",
]

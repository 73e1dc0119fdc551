"""Providers: one module each, registered on import of this package."""

from . import apicbase  # noqa: F401  (registers the built-in provider)
from .base import OAuthClient, Provider, TokenSet
from .oauth2 import OAuth2Provider
from .registry import register

__all__ = ["OAuth2Provider", "OAuthClient", "Provider", "TokenSet", "register"]

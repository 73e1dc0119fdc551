"""System checks: settings are validated at start-up, each message saying what to set."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections
from django.utils.module_loading import import_string

from . import conf
from .crypto import KEYGEN
from .exceptions import ConfigurationError


@register(Tags.security, Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    section = getattr(settings, "OAUTH_CONNECT", None)
    if not isinstance(section, dict):
        return [
            Error(
                "settings.OAUTH_CONNECT is missing or not a dict.",
                hint="Add OAUTH_CONNECT = {'ENCRYPTION_KEYS': [...], 'PROVIDERS': {...}}.",
                id="oauth_connect.E001",
            )
        ]
    unknown = sorted(set(section) - set(conf.DEFAULTS))
    messages: list[CheckMessage] = []
    if unknown:
        messages.append(
            Error(
                f"OAUTH_CONNECT has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(conf.DEFAULTS))}.",
                id="oauth_connect.E002",
            )
        )
    return [
        *messages,
        *_check_keys(),
        *_check_tenant(),
        *_check_providers(),
        *_check_limits(),
        *_check_throttle(),
    ]


def _check_keys() -> list[CheckMessage]:
    keys = conf.get("ENCRYPTION_KEYS")
    if not isinstance(keys, (list, tuple)) or not keys:
        return [
            Error(
                'OAUTH_CONNECT["ENCRYPTION_KEYS"] must be a non-empty list of Fernet keys.',
                hint=f"Generate one with: {KEYGEN}. Keep it secret, e.g. in an environment "
                "variable.",
                id="oauth_connect.E003",
            )
        ]
    messages: list[CheckMessage] = []
    for index, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            messages.append(
                Error(
                    f'OAUTH_CONNECT["ENCRYPTION_KEYS"][{index}] is not a valid Fernet key '
                    "(32 url-safe base64-encoded bytes).",
                    hint=f"Generate one with: {KEYGEN}.",
                    id="oauth_connect.E004",
                )
            )
    return messages


def _check_tenant() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    label = conf.tenant_model_label()
    try:
        apps.get_model(label, require_ready=False)
    except (ValueError, LookupError):
        messages.append(
            Error(
                f"OAUTH_CONNECT_TENANT_MODEL = {label!r} is not an installed model.",
                hint='Set it to "app_label.ModelName" of an installed model, or leave it unset '
                "to use AUTH_USER_MODEL.",
                id="oauth_connect.E005",
            )
        )
    resolver = conf.get("TENANT_RESOLVER")
    try:
        import_string(resolver)
    except (ImportError, AttributeError, TypeError):
        messages.append(
            Error(
                f'OAUTH_CONNECT["TENANT_RESOLVER"] = {resolver!r} can\'t be imported.',
                hint="Give the dotted path of a function f(request) -> tenant or None.",
                id="oauth_connect.E006",
            )
        )
    return messages


def _check_providers() -> list[CheckMessage]:
    from .providers import registry

    configured = conf.get("PROVIDERS")
    if not isinstance(configured, dict):
        return [
            Error(
                'OAUTH_CONNECT["PROVIDERS"] must be a dict of provider id -> settings dict.',
                id="oauth_connect.E007",
            )
        ]
    messages: list[CheckMessage] = []
    for provider_id, options in configured.items():
        where = f'OAUTH_CONNECT["PROVIDERS"]["{provider_id}"]'
        if not isinstance(options, dict):
            messages.append(Error(f"{where} must be a dict.", id="oauth_connect.E007"))
            continue
        try:
            provider = registry.get(provider_id)
        except ConfigurationError as err:
            messages.append(Error(str(err), id="oauth_connect.E008"))
            continue
        unknown = sorted(set(options) - set(provider.default_settings))
        if unknown:
            messages.append(
                Error(
                    f"{where} has unknown keys: {', '.join(unknown)}.",
                    hint=f"{type(provider).__name__} understands: "
                    f"{', '.join(sorted(provider.default_settings))}.",
                    id="oauth_connect.E009",
                )
            )
        missing = [key for key in provider.required_settings if not provider.settings.get(key)]
        if missing:
            messages.append(
                Error(
                    f"{where} is missing {', '.join(missing)}.",
                    hint="Set the provider's endpoint URLs.",
                    id="oauth_connect.E010",
                )
            )
        has_client = provider.settings.get("CLIENT_ID") and provider.settings.get("CLIENT_SECRET")
        if (
            provider.needs_oauth_client()
            and not has_client
            and not provider.settings.get("TENANT_CREDENTIALS_ONLY")
        ):
            messages.append(
                Error(
                    f"{where} has no CLIENT_ID and CLIENT_SECRET.",
                    hint="Set both (from the provider's developer settings), or set "
                    "TENANT_CREDENTIALS_ONLY: True if every tenant brings its own client "
                    "credentials.",
                    id="oauth_connect.E011",
                )
            )
        messages.extend(
            Error(problem, id="oauth_connect.E013") for problem in provider.check_settings()
        )
        if provider.settings.get("CLIENT_AUTH", "body") not in ("body", "basic"):
            messages.append(
                Error(f'{where}["CLIENT_AUTH"] must be "body" or "basic".', id="oauth_connect.E012")
            )
    return messages


def _positive(value: Any, *, whole: bool = False) -> bool:
    kinds = (int,) if whole else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and value > 0


def _check_limits() -> list[CheckMessage]:
    """The bounds on every exchange with a provider: a typo here would lift them silently."""
    wanted = {
        "HTTP_TIMEOUT": ("a positive number of seconds", False, False),
        "HTTP_DEADLINE": ("a positive number of seconds, or None", False, True),
        "MAX_RESPONSE_BYTES": ("a positive whole number of bytes", True, False),
    }
    messages: list[CheckMessage] = []
    for key, (what, whole, none_allowed) in wanted.items():
        value = conf.get(key)
        if not (_positive(value, whole=whole) or (none_allowed and value is None)):
            messages.append(
                Error(
                    f'OAUTH_CONNECT["{key}"] = {value!r} must be {what}.',
                    hint=f"Leave it out for the default, {conf.DEFAULTS[key]!r}.",
                    id="oauth_connect.E014",
                )
            )
    return messages


def _check_throttle() -> list[CheckMessage]:
    value = conf.get("CREDENTIAL_THROTTLE")
    where = 'OAUTH_CONNECT["CREDENTIAL_THROTTLE"]'
    hint = f"For example {conf.DEFAULTS['CREDENTIAL_THROTTLE']!r}; None turns it off."
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Error(f"{where} must be a dict, or None.", hint=hint, id="oauth_connect.E015")]
    problems = []
    unknown = sorted(set(value) - set(conf.DEFAULTS["CREDENTIAL_THROTTLE"]))
    if unknown:
        problems.append(f"{where} has unknown keys: {', '.join(unknown)}.")
    throttle = conf.credential_throttle() or {}
    for key in ("USER", "TENANT", "WINDOW"):
        if not _positive(throttle[key], whole=True):
            problems.append(f'{where}["{key}"] must be a positive whole number.')
    if throttle["CACHE"] not in settings.CACHES:
        problems.append(f'{where}["CACHE"] = {throttle["CACHE"]!r} is not a cache in CACHES.')
    return [Error(problem, hint=hint, id="oauth_connect.E015") for problem in problems]


@register(Tags.database)
def check_database(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    if not databases:
        return []
    messages = []
    for alias in databases:
        connection = connections[alias]
        if connection.vendor == "sqlite":
            messages.append(
                Warning(
                    f"Database {alias!r} is SQLite: token refreshes are single-flight within one "
                    "process only.",
                    hint="Fine for development and single-process deployments; use PostgreSQL "
                    "(row locks) when several processes or hosts refresh tokens.",
                    id="oauth_connect.W001",
                )
            )
    return messages

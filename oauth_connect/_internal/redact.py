"""Scrub secrets out of text that may reach a log, an exception or a page."""

from __future__ import annotations

from collections.abc import Iterable

# Form and JSON keys whose values are secrets, whoever sends them.
SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "client_secret",
        "code",
        "code_verifier",
        "password",
        "token",
        "id_token",
        "refreshToken",
    }
)
MASK = "[redacted]"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-trivial secret in ``secrets`` replaced by a mask."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def secret_values(data: dict[str, object] | None) -> list[str]:
    """The values of ``data`` (a request body) that are secrets."""
    if not data:
        return []
    return [str(value) for key, value in data.items() if key in SECRET_KEYS and value]

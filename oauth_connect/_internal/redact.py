"""Make a provider's words safe to store, log and show: secrets masked, control characters
gone, length bounded, in that order (a cut through a secret would leave its start unmasked)."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

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
#: How much of a provider's text (an error description, a message) we keep.
MAX_PROVIDER_WORDS = 300
# C0 and C1 controls, DEL, line and paragraph separators, zero-width characters and the
# bidirectional overrides that can make text in the admin read differently from what it says,
# and lone surrogates (JSON's "\ud800"), which no encoder takes: NUL alone is enough to make
# PostgreSQL refuse the row, and a surrogate to make the UTF-8 encoding of it raise.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]+"
)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-trivial secret in ``secrets`` replaced by a mask, also where a
    provider echoes it URL-encoded, JSON- or HTML-escaped, in base64 or in hex."""
    variants = {
        variant
        for secret in secrets
        if secret and len(secret) >= 4
        for variant in _encodings(secret)
        if len(variant) >= 4
    }
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, MASK)
    return text


_PERCENT_ESCAPE = re.compile("%[0-9A-F]{2}")


def _encodings(secret: str) -> tuple[str, ...]:
    """The forms in which a provider may echo ``secret``; the third has lower-case escapes
    (``%2f``), the fourth leaves "/" as it is (as JavaScript's ``encodeURI`` does)."""
    raw = secret.encode()
    b64 = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    return (
        secret,
        quote(secret, safe=""),
        _PERCENT_ESCAPE.sub(lambda escape: escape.group().lower(), quote(secret, safe="")),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
        b64,
        b64.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
        raw.hex(),
        raw.hex().upper(),
    )


def printable(text: str) -> str:
    """``text`` with control characters (NUL, CR/LF...) and direction overrides replaced by a
    space: what a database column, a log line and a page can all take."""
    return _UNPRINTABLE.sub(" ", text)


def provider_words(
    value: object, secrets: Iterable[str | None] = (), limit: int = MAX_PROVIDER_WORDS
) -> str:
    """What a provider said (``value``: a string, or a number; anything else is ignored), fit
    to reach an error, an event, a log line or a page: redacted first, then made printable,
    then cut to ``limit`` characters. The one helper every provider's text goes through."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    secrets = list(secrets)
    text = redact(str(value), secrets)
    # A secret echoed with a control character inside it ("sk-12\x0034") slips past the mask;
    # with the control characters taken out it doesn't.
    squeezed = _UNPRINTABLE.sub("", text)
    unmasked = redact(squeezed, secrets)
    text = unmasked if unmasked != squeezed else printable(text)
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def secret_values(data: dict[str, object] | None) -> list[str]:
    """The values of ``data`` (a request body) that are secrets."""
    if not data:
        return []
    return [str(value) for key, value in data.items() if key in SECRET_KEYS and value]

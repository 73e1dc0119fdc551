"""Check what a provider issued before any of it is stored or sent.

A token goes into an ``Authorization`` header and an encrypted column; the token type, scopes
and expiries go into plain columns. A value a header can't carry (CR/LF), a column refuses (NUL,
too long) or a date Python can't add to would otherwise fail later, far from its cause: at the
next API call, or in the middle of storing a rotation. Here each is caught when it arrives.

The tokens themselves decide whether the answer is usable; the rest is descriptive, so a bad
token type, scope list or expiry is replaced (by the provider's scheme, "keep what we know",
"unknown") and the event log says so, rather than losing a rotation over it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.utils import timezone

from ..models import Connection
from ..providers.base import MAX_LIFETIME_SECONDS, Provider, TokenSet

#: The longest token we store and send. Real ones (JWTs included) are a few kilobytes; HTTP
#: servers commonly refuse header lines over 8 KiB.
MAX_TOKEN_LENGTH = 16 * 1024
#: The longest list of granted scopes we store (the words, joined by spaces).
MAX_SCOPES_LENGTH = 4096
# RFC 6749 Appendix A.12: access-token = 1*VSCHAR, less the space, which no Authorization
# scheme (Bearer's b64token, RFC 6750 §2.1) can carry unambiguously.
_ACCESS_TOKEN = re.compile(r"[\x21-\x7e]+")
# RFC 6749 Appendix A.17: refresh-token = 1*VSCHAR. It travels in a form body only.
_REFRESH_TOKEN = re.compile(r"[\x20-\x7e]+")
# RFC 6749 §3.3: scope-token = 1*NQCHAR.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# RFC 9110 §5.6.2 token, at most as long as Connection.token_type.
_TOKEN_TYPE_LENGTH = Connection._meta.get_field("token_type").max_length
_TOKEN_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1," + str(_TOKEN_TYPE_LENGTH) + "}")


@dataclass(frozen=True)
class CheckedTokens:
    """A token set fit to store: ``tokens`` with its descriptive values made safe (``notes``
    say what was replaced), and what, if anything, makes either token unusable."""

    tokens: TokenSet
    notes: list[str] = field(default_factory=list)
    access_problem: str = ""
    refresh_problem: str = ""

    @property
    def usable(self) -> bool:
        return not (self.access_problem or self.refresh_problem)

    @property
    def noted_tokens(self) -> TokenSet:
        """``tokens``, with a note (after any the provider class made) saying what of the
        answer was set aside, for the event log."""
        if not self.notes:
            return self.tokens
        said = f"The provider's answer: {'; '.join(self.notes)}."
        return replace(self.tokens, note=" ".join(filter(None, [self.tokens.note, said])))

    @property
    def problem(self) -> str:
        """Both problems, in one sentence's words."""
        return "; ".join(p for p in (self.access_problem, self.refresh_problem) if p)

    def salvage(self, current: Connection) -> TokenSet | None:
        """What of an unusable answer is worth storing over ``current``: a usable new refresh
        token with the stored access token (which the provider may still accept), or a usable
        access token with the stored refresh token. None when neither token is usable."""
        tokens = self.tokens
        if self.access_problem:
            if self.refresh_problem or tokens.refresh_token is None:
                return None
            return replace(
                tokens,
                access_token=current.access_token,
                token_type=current.token_type,
                scopes=None,
                expires_at=current.expires_at,
            )
        return replace(tokens, refresh_token=None)


def check_tokens(tokens: TokenSet, provider: Provider) -> CheckedTokens:
    """Check a token set ``provider`` issued; see :class:`CheckedTokens`."""
    notes: list[str] = []
    token_type = tokens.token_type
    if not (isinstance(token_type, str) and _TOKEN_TYPE.fullmatch(token_type)):
        notes.append(f"its token type was unusable and {provider.header_scheme!r} was assumed")
        token_type = provider.header_scheme
    scopes = tokens.scopes
    if scopes is not None and not _scopes_ok(scopes):
        notes.append("its list of granted scopes was unusable and was not stored")
        scopes = None
    expires_at = _sane_expiry(tokens.expires_at)
    refresh_expires_at = _sane_expiry(tokens.refresh_expires_at)
    if (expires_at, refresh_expires_at) != (tokens.expires_at, tokens.refresh_expires_at):
        notes.append("an expiry it gave was impossible and is treated as unknown")
    checked = replace(
        tokens,
        token_type=token_type,
        scopes=scopes,
        expires_at=expires_at,
        refresh_expires_at=refresh_expires_at,
    )
    return CheckedTokens(
        tokens=checked,
        notes=notes,
        access_problem=_token_problem("access token", tokens.access_token, _ACCESS_TOKEN),
        refresh_problem=(
            ""
            if tokens.refresh_token is None
            else _token_problem("refresh token", tokens.refresh_token, _REFRESH_TOKEN)
        ),
    )


def sendable_token(value: str) -> bool:
    """Whether ``value`` can go in an ``Authorization`` header as an access token."""
    return len(value) <= MAX_TOKEN_LENGTH and _ACCESS_TOKEN.fullmatch(value) is not None


def _token_problem(name: str, value: object, allowed: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not value:
        return f"its {name} is missing or not a string"
    if len(value) > MAX_TOKEN_LENGTH:
        return f"its {name} is longer than {MAX_TOKEN_LENGTH:,} characters"
    if not allowed.fullmatch(value):
        return (
            f"its {name} holds characters a token can't have (control characters, spaces or "
            "non-ASCII), which an HTTP request can't carry"
        )
    return ""


def _scopes_ok(scopes: object) -> bool:
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        return False
    return len(" ".join(scopes)) <= MAX_SCOPES_LENGTH and all(_SCOPE.fullmatch(s) for s in scopes)


def _sane_expiry(value: object) -> datetime | None:
    """``value`` if it is an aware datetime within ten years of now (either way), else None."""
    if not isinstance(value, datetime) or timezone.is_naive(value):
        return None
    horizon = timedelta(seconds=MAX_LIFETIME_SECONDS)
    try:
        now = timezone.now()
        return value if now - horizon <= value <= now + horizon else None
    except OverflowError:
        return None

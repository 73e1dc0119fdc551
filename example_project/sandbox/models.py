"""What the sandbox's fake Custobar and TeleTracker remember: the tokens they issued.

Only the sandbox uses these tables. Rows are never deleted, so tests can count what was issued.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class CustobarToken(models.Model):
    """A Custobar API token. A user has one valid token per company at a time (the vendor's
    rule); a rotated one is kept with ``revoked_at`` set. Tokens never expire."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sandbox_custobar_tokens"
    )
    company = models.SlugField(max_length=100)
    token = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "user"],
                condition=Q(revoked_at__isnull=True),
                name="sandbox_custobar_one_valid_token",
            ),
        ]

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else "valid"
        return f"Custobar token of {self.user} at {self.company} ({state})"


class TeleTrackerSession(models.Model):
    """One TeleTracker authentication session: a login, or a refresh of an earlier session.

    A refresh creates a new row and marks the refreshed row's ``refresh_used_at``: its refresh
    token is dead from then on. Its bearer token keeps working until ``token_expires``.
    """

    class Kind(models.TextChoices):
        LOGIN = "login", "Login"
        REFRESH = "refresh", "Refresh"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="sandbox_teletracker_sessions",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LOGIN)
    refreshed_from = models.OneToOneField(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="refreshed_by"
    )
    account_id = models.CharField(max_length=20, blank=True, default="")
    guid = models.CharField(max_length=36, unique=True)
    token = models.CharField(max_length=36, unique=True)
    token_expires = models.DateTimeField()
    refresh_token = models.CharField(max_length=36, unique=True)
    refresh_expires = models.DateTimeField()
    refresh_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created", "pk"]

    def __str__(self) -> str:
        return f"TeleTracker {self.kind} session of {self.user} at {self.created:%Y-%m-%d %H:%M}"

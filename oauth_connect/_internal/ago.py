"""How long ago something happened, in words people read at a glance."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

# Under this, "just now": "0 minutes ago" reads like a bug.
JUST_NOW = timedelta(minutes=1)


def time_ago(moment: datetime, now: datetime | None = None) -> str:
    """"just now", or "5 minutes ago", "2 days, 3 hours ago" (Django's ``timesince``)."""
    now = now or timezone.now()
    if now - moment < JUST_NOW:
        return _("just now")
    return _("%(time)s ago") % {"time": timesince(moment, now)}

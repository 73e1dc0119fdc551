"""How long ago something happened, or how long until it does, in words people read at a
glance: never "0 minutes"."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext as _

# Under this, "just now": "0 minutes ago" reads like a bug.
JUST_NOW = timedelta(minutes=1)


def time_ago(moment: datetime, now: datetime | None = None) -> str:
    """ "just now", or "5 minutes ago", "2 days, 3 hours ago" (Django's ``timesince``)."""
    now = now or timezone.now()
    if now - moment < JUST_NOW:
        return _("just now")
    return _("%(time)s ago") % {"time": timesince(moment, now)}


def time_until(moment: datetime, now: datetime | None = None) -> str:
    """ "under a minute", or "5 minutes", "2 days, 3 hours" (Django's ``timeuntil``); for a
    moment in the future (one in the past is "0 minutes" to Django, and "under a minute"
    here: say "expired" before calling this)."""
    now = now or timezone.now()
    if moment - now < JUST_NOW:
        return _("under a minute")
    return timeuntil(moment, now)

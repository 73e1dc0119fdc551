"""The example project's Celery app: ``celery -A example_project worker`` refreshes tokens and
``celery -A example_project beat`` schedules it, like the ``refresh_tokens`` cron line.

The broker is ``CELERY_BROKER_URL`` (default ``redis://127.0.0.1:6379/0``); results go to
``CELERY_RESULT_BACKEND``, by default the same Redis. Any ``CELERY_*`` Django setting is read too.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery(
    "example_project",
    broker=BROKER_URL,
    backend=os.environ.get("CELERY_RESULT_BACKEND", BROKER_URL),
    # oauth_connect's tasks live in oauth_connect.contrib.celery, which autodiscovery (it looks
    # for <app>.tasks) would not find.
    include=["oauth_connect.contrib.celery"],
)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    "oauth-connect-refresh-due-connections": {
        "task": "oauth_connect.refresh_due_connections",
        "schedule": crontab(minute="*/15"),
        "kwargs": {"within_seconds": 24 * 3600},
        # A fan-out still queued when the next one is due is redundant: drop it.
        "options": {"expires": 15 * 60},
    },
}

"""A fake TeleTracker, as its API documentation describes it: a password login returning a
short-lived bearer token and a rotating refresh token, each with its own expiry.

Users are this project's Django users (the demo logs in as demo / demo).

- ``POST /sandbox/teletracker/auth/login`` (form: ``username``, ``password``, optional
  ``account_id``, optional ``auth_only=1``): a new session.
- ``POST /sandbox/teletracker/auth/refresh`` (form: ``refresh_token``): a new token AND a new
  refresh token; the old refresh token is dead from then on.
- ``GET /sandbox/teletracker/api/v1/vehicles`` with ``Authorization: Bearer <token>``: some
  vehicles. An expired token gets 403, an unknown or missing one 401 (the vendor says "401 or
  403", so clients must handle both).

Settings (read at each request, so tests can override them):

- ``SANDBOX_TELETRACKER_TOKEN_SECONDS``: bearer token lifetime (default 3600, like the vendor).
- ``SANDBOX_TELETRACKER_REFRESH_SECONDS``: refresh token lifetime (default 30 days).
- ``SANDBOX_TELETRACKER_CLOCK_SKEW_SECONDS``: added to the timestamps the answers *report*
  (``tokenExpiration``, ``refreshTokenExpiration``), as if the vendor's clock were off; what the
  sandbox enforces, and ``tokenLifetime``, stay right. Default 0.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import TeleTrackerSession

VEHICLES = [
    {"id": 501, "name": "Van 1", "plate": "AB-123-C"},
    {"id": 502, "name": "Truck 7", "plate": "XY-987-Z"},
]
REFRESH_SECONDS = 30 * 24 * 3600


def token_seconds() -> int:
    return int(getattr(settings, "SANDBOX_TELETRACKER_TOKEN_SECONDS", 3600))


def refresh_seconds() -> int:
    return int(getattr(settings, "SANDBOX_TELETRACKER_REFRESH_SECONDS", REFRESH_SECONDS))


def clock_skew() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "SANDBOX_TELETRACKER_CLOCK_SKEW_SECONDS", 0)))


def _refused(message: str, status: int = 401) -> JsonResponse:
    return JsonResponse({"success": False, "message": message}, status=status)


def _reported(moment: datetime) -> str:
    """A timestamp as the vendor's (possibly skewed) clock reports it: ISO 8601 with offset."""
    return (moment + clock_skew()).isoformat(timespec="seconds")


def _start_session(user: Any, account_id: str, refreshed: TeleTrackerSession | None = None) -> Any:
    now = timezone.now()
    session = TeleTrackerSession.objects.create(
        user=user,
        kind=TeleTrackerSession.Kind.REFRESH if refreshed else TeleTrackerSession.Kind.LOGIN,
        refreshed_from=refreshed,
        account_id=account_id,
        guid=str(uuid.uuid4()),
        token=str(uuid.uuid4()),
        token_expires=now + timedelta(seconds=token_seconds()),
        refresh_token=str(uuid.uuid4()),
        refresh_expires=now + timedelta(seconds=refresh_seconds()),
        created=now,
    )
    return JsonResponse(
        {
            "success": True,
            "guid": session.guid,
            "token": session.token,
            "tokenExpiration": _reported(session.token_expires),
            "tokenLifetime": token_seconds(),
            "refreshToken": session.refresh_token,
            "refreshTokenExpiration": _reported(session.refresh_expires),
        }
    )


@csrf_exempt
@require_POST
def login(request: HttpRequest) -> JsonResponse:
    username = request.POST.get("username", "")
    password = request.POST.get("password", "")
    account_id = request.POST.get("account_id", "").strip()
    if not username or not password:
        return _refused("username and password are required", status=400)
    if account_id and not account_id.isdigit():
        return _refused("account_id must be an integer", status=400)
    user = authenticate(request, username=username, password=password)
    if user is None:
        return _refused("Invalid username or password")
    if request.POST.get("auth_only") in ("1", "true"):
        return JsonResponse({"success": True})
    return _start_session(user, account_id)


@csrf_exempt
@require_POST
def refresh(request: HttpRequest) -> JsonResponse:
    value = request.POST.get("refresh_token", "").strip()
    now = timezone.now()
    session = TeleTrackerSession.objects.filter(refresh_token=value).first() if value else None
    if session is None or session.revoked_at is not None or session.refresh_used_at is not None:
        return _refused("Invalid refresh token")
    if session.refresh_expires <= now:
        return _refused("Refresh token expired")
    # Spend it atomically: of two concurrent refreshes with the same token, one wins.
    spent = TeleTrackerSession.objects.filter(pk=session.pk, refresh_used_at=None).update(
        refresh_used_at=now
    )
    if not spent:
        return _refused("Invalid refresh token")
    return _start_session(session.user, session.account_id, refreshed=session)


@csrf_exempt
@require_GET
def vehicles(request: HttpRequest) -> JsonResponse:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    session = (
        TeleTrackerSession.objects.filter(token=value.strip(), revoked_at=None).first()
        if scheme.lower() == "bearer" and value.strip()
        else None
    )
    if session is None:
        return _refused("Unauthorized", status=401)
    if session.token_expires <= timezone.now():
        return _refused("Token expired", status=403)
    return JsonResponse({"results": VEHICLES})

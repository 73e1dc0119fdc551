"""A fake Custobar, as its API documentation describes it: HTTP basic exchanged for the user's
one API token.

``/sandbox/custobar/<company>/`` stands for ``https://<company>.custobar.com/``: any slug is a
company, and its users are this project's Django users (the demo logs in as demo / demo).

- ``GET  api/auth/access-token/`` (basic auth): ``{"token": ...}``, the user's one valid token,
  created on first use.
- ``POST api/auth/new-access-token/`` (basic auth): invalidates that token, returns a new one.
- ``GET  api/customers/`` with ``Authorization: Token <valid token>``: some customers.

Wrong or missing credentials get 401 ``{"detail": ...}``, like the real API. Tokens never expire.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from django.contrib.auth import authenticate
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import CustobarToken

CUSTOMERS = [
    {"external_id": "1001", "first_name": "Ada", "last_name": "Lovelace", "city": "London"},
    {"external_id": "1002", "first_name": "Grace", "last_name": "Hopper", "city": "New York"},
]


def _unauthorized(detail: str, scheme: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=401)
    response["WWW-Authenticate"] = f'{scheme} realm="api"'
    return response


def _basic_auth_user(request: HttpRequest) -> Any:
    """The user HTTP basic authentication names, if the password is right; else None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    username, colon, password = decoded.partition(":")
    if not colon:
        return None
    return authenticate(request, username=username, password=password)


def _new_token() -> str:
    return secrets.token_hex(20)


def _current_token(user: Any, company: str) -> CustobarToken:
    try:
        # get_or_create retries the get when a concurrent first use won the insert.
        token, _ = CustobarToken.objects.get_or_create(
            user=user, company=company, revoked_at=None, defaults={"token": _new_token()}
        )
    except IntegrityError:
        token = CustobarToken.objects.get(user=user, company=company, revoked_at=None)
    return token


@csrf_exempt
@require_GET
def access_token(request: HttpRequest, company: str) -> JsonResponse:
    user = _basic_auth_user(request)
    if user is None:
        return _unauthorized("Invalid username/password.", "Basic")
    return JsonResponse({"token": _current_token(user, company).token})


@csrf_exempt
@require_POST
def new_access_token(request: HttpRequest, company: str) -> JsonResponse:
    user = _basic_auth_user(request)
    if user is None:
        return _unauthorized("Invalid username/password.", "Basic")
    for _attempt in range(3):
        try:
            with transaction.atomic():
                CustobarToken.objects.filter(user=user, company=company, revoked_at=None).update(
                    revoked_at=timezone.now()
                )
                token = CustobarToken.objects.create(user=user, company=company, token=_new_token())
            return JsonResponse({"token": token.token})
        except IntegrityError:
            continue  # a concurrent rotation won; rotate again over it
    return JsonResponse({"detail": "Try again."}, status=409)


@csrf_exempt
@require_GET
def customers(request: HttpRequest, company: str) -> JsonResponse:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    valid = (
        scheme == "Token"
        and value.strip()
        and CustobarToken.objects.filter(
            token=value.strip(), company=company, revoked_at=None
        ).exists()
    )
    if not valid:
        return _unauthorized("Invalid token.", "Token")
    return JsonResponse({"company": company, "results": CUSTOMERS})

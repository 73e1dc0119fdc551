"""The product's own pages that call a tenant's API: the same call from a sync view and from an
async one (served under ASGI: ``uvicorn example_project.asgi:application``)."""

from __future__ import annotations

import aiohttp
import requests
from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from oauth_connect.exceptions import ConnectionUnavailable, ProviderError, ReauthorizationRequired
from oauth_connect.models import Connection

from .resolvers import current_organisation


def recipes(request: HttpRequest) -> HttpResponse:
    """The tenant's Apicbase recipes, through ``connection.session()``."""
    organisation = current_organisation(request)
    if organisation is None:
        return redirect_to_login(request.get_full_path())
    connection = Connection.objects.filter(
        tenant=organisation, provider="apicbase", label=""
    ).first()
    if connection is None:
        messages.info(request, "Connect Apicbase first.")
        return redirect("oauth_connect:list")
    try:
        response = connection.session().get("library/recipes/")
    except (ReauthorizationRequired, ConnectionUnavailable):
        messages.info(request, "Apicbase needs you to connect it again.")
        return redirect("oauth_connect:list")
    except (ProviderError, requests.RequestException) as err:
        return _unavailable(err)
    if not response.ok:
        return JsonResponse({"apicbase_status": response.status_code}, status=502)
    return JsonResponse(response.json())


async def recipes_async(request: HttpRequest) -> HttpResponse:
    """The same, through ``connection.asession()``: the event loop is never blocked, and a
    refresh runs on a thread while other requests go on."""
    # The resolver reads request.user and the database: sync code, so on a thread.
    organisation = await sync_to_async(current_organisation)(request)
    if organisation is None:
        return redirect_to_login(request.get_full_path())
    connection = await Connection.objects.filter(
        tenant=organisation, provider="apicbase", label=""
    ).afirst()
    if connection is None:
        messages.info(request, "Connect Apicbase first.")
        return redirect("oauth_connect:list")
    try:
        api = await connection.asession()
        response = await api.get("library/recipes/")
    except (ReauthorizationRequired, ConnectionUnavailable):
        messages.info(request, "Apicbase needs you to connect it again.")
        return redirect("oauth_connect:list")
    except (ProviderError, aiohttp.ClientError) as err:
        return _unavailable(err)
    if not response.ok:
        return JsonResponse({"apicbase_status": response.status}, status=502)
    return JsonResponse(await response.json())


def _unavailable(err: Exception) -> JsonResponse:
    """Apicbase failed (down, too slow, a refresh it refused for now): a 502 that says so, not
    a 500. Our errors carry no secret; a network error's class name is all that is shown."""
    detail = err.detail if isinstance(err, ProviderError) else type(err).__name__
    return JsonResponse({"error": f"Apicbase is unavailable: {detail}"}, status=502)

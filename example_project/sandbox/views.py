"""A small API protected by the sandbox's OAuth2 tokens, shaped loosely like Apicbase's."""

from django.http import HttpRequest, JsonResponse
from oauth2_provider.decorators import protected_resource

RECIPES = [
    {"id": 1, "name": "Tomato soup"},
    {"id": 2, "name": "Focaccia"},
]

# advertise_metadata=True makes an expired or unknown token answer 401 (RFC 6750), as Apicbase
# does, instead of django-oauth-toolkit's default 403.


@protected_resource(scopes=["accounts"], advertise_metadata=True)
def me(request: HttpRequest) -> JsonResponse:
    user = request.resource_owner  # type: ignore[attr-defined]
    return JsonResponse({"username": user.get_username()})


@protected_resource(scopes=["library"], advertise_metadata=True)
def recipes(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"results": RECIPES})

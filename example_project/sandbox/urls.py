"""The sandbox: django-oauth-toolkit as the authorization server, and a small protected API."""

from django.urls import include, path

from . import views

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("api/v1/accounts/me/", views.me, name="sandbox-me"),
    path("api/v1/library/recipes/", views.recipes, name="sandbox-recipes"),
]

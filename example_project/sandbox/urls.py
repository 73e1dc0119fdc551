"""The sandbox: django-oauth-toolkit as the authorization server with a small protected API
(posing as Apicbase), and fakes of Custobar and TeleTracker."""

from django.urls import include, path

from . import custobar, teletracker, views

custobar_urls = [
    path("api/auth/access-token/", custobar.access_token, name="sandbox-custobar-access-token"),
    path(
        "api/auth/new-access-token/",
        custobar.new_access_token,
        name="sandbox-custobar-new-access-token",
    ),
    path("api/customers/", custobar.customers, name="sandbox-custobar-customers"),
]

teletracker_urls = [
    path("auth/login", teletracker.login, name="sandbox-teletracker-login"),
    path("auth/refresh", teletracker.refresh, name="sandbox-teletracker-refresh"),
    path("api/v1/vehicles", teletracker.vehicles, name="sandbox-teletracker-vehicles"),
]

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("api/v1/accounts/me/", views.me, name="sandbox-me"),
    path("api/v1/library/recipes/", views.recipes, name="sandbox-recipes"),
    path("custobar/<slug:company>/", include(custobar_urls)),
    path("teletracker/", include(teletracker_urls)),
]

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from example_project.tenants import views as tenant_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="oauth_connect:list"), name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("connections/", include("oauth_connect.urls")),
    path("recipes/", tenant_views.recipes, name="recipes"),
    path("recipes/async/", tenant_views.recipes_async, name="recipes-async"),
    path("sandbox/", include("example_project.sandbox.urls")),
]

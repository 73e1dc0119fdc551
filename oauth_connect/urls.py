from django.urls import path

from . import views

app_name = "oauth_connect"

urlpatterns = [
    path("", views.ConnectionListView.as_view(), name="list"),
    path("<slug:provider>/connect/", views.ConnectView.as_view(), name="connect"),
    path("<slug:provider>/callback/", views.CallbackView.as_view(), name="callback"),
    path("<int:pk>/disconnect/", views.DisconnectView.as_view(), name="disconnect"),
]

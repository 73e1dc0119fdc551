from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OAuthConnectConfig(AppConfig):
    name = "oauth_connect"
    verbose_name = _("API connections")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, providers  # noqa: F401  (register checks and built-in providers)

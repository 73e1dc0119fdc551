"""The sandbox's issued tokens in the admin, to watch rotations and refreshes in the demo."""

from django.contrib import admin

from .models import CustobarToken, TeleTrackerSession


@admin.register(CustobarToken)
class CustobarTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "company", "created", "revoked_at"]
    list_filter = ["company"]


@admin.register(TeleTrackerSession)
class TeleTrackerSessionAdmin(admin.ModelAdmin):
    list_display = [
        "user",
        "kind",
        "account_id",
        "created",
        "token_expires",
        "refresh_expires",
        "refresh_used_at",
        "revoked_at",
    ]
    list_filter = ["kind"]

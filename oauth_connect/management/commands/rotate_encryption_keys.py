"""Re-encrypt every stored secret with the first key of ENCRYPTION_KEYS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...services.keys import rotate_encryption_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the first key in OAUTH_CONNECT['ENCRYPTION_KEYS'], "
        "so older keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = rotate_encryption_keys()
        self.stdout.write(f"Re-encrypted {report.rotated} value(s) in {report.rows} row(s).")
        if report.failures:
            for failure in report.failures:
                self.stderr.write(self.style.ERROR(failure))
            raise CommandError(
                f"{len(report.failures)} value(s) could not be decrypted with any configured key; "
                "they were left unchanged. Keep the old keys until they are fixed or reconnected."
            )
        self.stdout.write(self.style.SUCCESS("Every secret is now encrypted with the first key."))

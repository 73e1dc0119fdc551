"""The migrations work with any tenant model, not only the example project's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A project whose tenants are its users (the default): no example_project app installed, so a
# migration that depends on the example's tenant app fails here.
PROJECT_WITHOUT_EXAMPLE = """
import django
from django.conf import settings
from django.core.management import call_command

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "oauth_connect"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
    OAUTH_CONNECT={"ENCRYPTION_KEYS": ["gxU4Em12pHLM4owjeSDxH9022GVjWpQGZIyofQ1YnMk="]},
)
django.setup()
call_command("migrate", verbosity=0)
call_command("makemigrations", "oauth_connect", check=True, dry_run=True, verbosity=0)
print("migrated")
"""


def test_migrations_apply_with_the_default_tenant_model_and_are_complete() -> None:
    finished = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", PROJECT_WITHOUT_EXAMPLE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.strip() == "migrated"

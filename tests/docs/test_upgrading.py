"""docs/upgrading.md, run as an upgrade from a database made before migration 0003: the
commands say what the page shows, the index is built by hand (concurrently on PostgreSQL) and
the migration faked, keys are rotated; and the page keeps up with the migrations, the
CHANGELOG, tox.ini and pyproject.toml."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import metadata
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

import oauth_connect
from oauth_connect import crypto
from oauth_connect.models import Connection
from tests.docs.harness import DOCS, ROOT

PAGE = (DOCS / "upgrading.md").read_text()
MIGRATIONS = sorted(path.stem for path in (ROOT / "oauth_connect/migrations").glob("0*.py"))
INDEX = "oauth_connect_listing_idx"
NEW_KEY = Fernet.generate_key().decode()
OLD_KEY = Fernet.generate_key().decode()


def index_exists() -> bool:
    with connection.cursor() as cursor:
        return INDEX in connection.introspection.get_constraints(cursor, "oauth_connect_connection")


@pytest.fixture
def database_before_0003(transactional_db: None) -> Iterator[None]:
    """The reader's database, made by a version before 0003_listing_index; put back as it was
    found (every migration applied) whatever the test did."""
    call_command("migrate", "oauth_connect", "0002", verbosity=0)
    assert not index_exists()
    yield
    applied = ("oauth_connect", "0003_listing_index") in MigrationRecorder(
        connection
    ).applied_migrations()
    if not applied:
        call_command("migrate", "oauth_connect", fake=index_exists(), verbosity=0)
    assert index_exists()


def python(arguments: list[str]) -> str | None:
    """``python -m pip install --upgrade oauth_connect``: checked, not run (no index here).
    ``python -W error::DeprecationWarning manage.py check``: run for real, in the example
    project."""
    if arguments[:2] == ["-m", "pip"]:
        assert arguments[2:4] == ["install", "--upgrade"], arguments
        assert arguments[4:] == [metadata("oauth_connect")["Name"]], arguments
        return None
    assert arguments[:2] == ["-W", "error::DeprecationWarning"], arguments
    finished = subprocess.run(  # noqa: S603 - this interpreter, the page's own command
        [sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def psql(arguments: list[str]) -> str:
    """The page's ``psql "$DATABASE_URL" -c '...'``. The statement must be the migration's own,
    made concurrent. On PostgreSQL it runs as written, with psql, against the test database; on
    SQLite, which has no CONCURRENTLY and needs no such care, the same index is built without
    it, so the rest of the page runs on."""
    url, option, statement = arguments
    assert (url, option) == ("$DATABASE_URL", "-c")
    sqlmigrate = call_command("sqlmigrate", "oauth_connect", "0003", stdout=io.StringIO())
    [create] = [line for line in sqlmigrate.splitlines() if line.startswith("CREATE INDEX ")]
    assert statement == create.replace("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1)
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(create.rstrip(";"))
        return ""
    database = connection.settings_dict
    test_database_url = (
        f"postgresql://{quote(database['USER'] or '')}:{quote(database['PASSWORD'] or '')}"
        f"@{database['HOST'] or 'localhost'}:{database['PORT'] or 5432}/{database['NAME']}"
    )
    finished = subprocess.run(  # noqa: S603 - psql, the page's own statement
        ["psql", test_database_url, "-v", "ON_ERROR_STOP=1", option, statement],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


def test_upgrading_from_a_database_before_0003(
    run_docs_page: Callable[..., Any],
    database_before_0003: None,
    settings: Any,
    make_connection: Callable[..., Connection],
) -> None:
    # Secrets written under the old key; the reader has put a new key first.
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "ENCRYPTION_KEYS": [OLD_KEY]}
    stored = make_connection()
    settings.OAUTH_CONNECT = {**settings.OAUTH_CONNECT, "ENCRYPTION_KEYS": [NEW_KEY, OLD_KEY]}

    run = run_docs_page("upgrading.md", commands={"python": python, "psql": psql})
    assert run.namespace["installed"] == oauth_connect.__version__
    [deprecations] = run.output_of("DeprecationWarning manage.py check")
    assert "System check identified no issues" in deprecations
    # showmigrations, before migrate: 0003 is what the upgrade brings.
    [pending] = run.output_of("showmigrations oauth_connect")
    assert lines(pending) == lines(run.output_of("[ ] 0003_listing_index"))
    [sql] = run.output_of("sqlmigrate oauth_connect 0003")
    assert lines(sql) == lines(run.output_of("BEGIN;"))
    # The index built by hand, the migration recorded without running it.
    [built, faked] = run.output_of("psql")
    if connection.vendor == "postgresql":
        assert built.strip() == "CREATE INDEX"  # psql's own report
    assert "Applying oauth_connect.0003_listing_index... FAKED" in faked
    assert index_exists()
    [migrated, checked] = run.output_of("python manage.py migrate\n")
    assert "No migrations to apply." in migrated
    assert lines(checked) == lines(run.output_of("System check identified no issues (0"))
    # The old key's secrets, re-encrypted with the new one.
    [rotated] = run.output_of("rotate_encryption_keys")
    assert lines(rotated) == lines(run.output_of("Re-encrypted"))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, refresh_token FROM oauth_connect_connection WHERE id = %s",
            [stored.pk],
        )
        [values] = cursor.fetchall()
    assert all(crypto.is_encrypted_with_primary_key(value) for value in values)
    assert Connection.objects.get(pk=stored.pk).refresh_token == "refresh-token-1"


def test_the_release_notes_keep_up_with_the_migrations_and_the_changelog() -> None:
    notes = PAGE.split("## Release notes")[1]
    assert MIGRATIONS, "no migrations found"
    for name in MIGRATIONS:
        assert f"`{name}`" in notes, f"the release notes don't say which release brings {name}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.M)
    assert released[0] == oauth_connect.__version__
    for version in released:
        assert f"\n### {version}\n" in notes, f"no release notes for {version}"
    if "## [Unreleased]" in changelog:
        assert f"\n### From {released[0]} to the next release\n" in notes


def test_the_supported_versions_are_what_tox_and_pyproject_say() -> None:
    tox = (ROOT / "tox.ini").read_text()
    [envlist] = re.findall(r"^envlist =\n((?:[ \t]+\S.*\n)+)", tox, re.M)
    tested = set()
    for env in envlist.split():
        match = re.fullmatch(r"(\w*)\{([\d,]+)\}(.*)", env)
        if match:
            tested |= {f"{match[1]}{version}{match[3]}" for version in match[2].split(",")}
        else:
            tested.add(env)
    section = PAGE.split("## Supported versions")[1].split("\n## ")[0]
    listed = set(re.findall(r"^\|[^|]*\|[^|]*\| `([\w-]+)` \|$", section, re.M))
    assert listed == tested
    rows = re.findall(r"^\| (3\.\d+) \| ([\d.x]+)[^|]*\| `py(\d+)-django(\d+)", section, re.M)
    assert len(rows) == len(listed)
    for python_version, django_version, env_python, env_django in rows:
        assert python_version.replace(".", "") == env_python
        assert django_version.removesuffix(".x").replace(".", "") == env_django
    pyproject = (ROOT / "pyproject.toml").read_text()
    [requires_python] = re.findall(r'^requires-python = "(.*)"$', pyproject, re.M)
    [django] = re.findall(r'^\s*"(django[<>=][^"]*)",$', pyproject, re.M)
    assert f'`requires-python = "{requires_python}"`' in section
    assert f"(`{django}`)" in section

"""docs/translations.md: the languages turned on, the French a tenant reads, a project's own
wording through LOCALE_PATHS, and a contributed language passing the checks French passes.

The page's shell steps run for real, each in a directory of its own: the reader's project, and a
copy of this checkout for the contributor's steps."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from oauth_connect.models import Connection
from tests.docs.harness import ROOT, blocks
from tests.test_translations import (
    PACKAGE,
    Entry,
    catalog_problems,
    mo_differences,
    needs,
    parse_po,
    read_po,
    source_drift,
)

PAGE = "translations.md"


def block_starting(prefix: str) -> str:
    [code] = [block.code for block in blocks(PAGE) if block.code.startswith(prefix)]
    return code


def po_string(text: str) -> str:
    """``text`` as a .po string: one quoted line per line of text, as gettext writes them."""
    lines = text.splitlines(keepends=True)
    quoted = [json.dumps(line, ensure_ascii=False) for line in lines or [""]]
    return "\n".join(['""', *quoted] if len(quoted) > 1 else quoted)


def format_po(entries: list[Entry]) -> str:
    out = []
    for entry in entries:
        lines = [*entry.comments]
        if entry.flags:
            lines.append("#, " + ", ".join(sorted(entry.flags)))
        if entry.msgctxt is not None:
            lines.append(f"msgctxt {po_string(entry.msgctxt)}")
        lines.append(f"msgid {po_string(entry.msgid)}")
        if entry.msgid_plural is None:
            lines.append(f"msgstr {po_string(entry.msgstr[0])}")
        else:
            lines.append(f"msgid_plural {po_string(entry.msgid_plural)}")
            lines += [f"msgstr[{n}] {po_string(text)}" for n, text in sorted(entry.msgstr.items())]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def translate(path: Path, words: dict[str, str]) -> None:
    """What the page's ``$EDITOR`` step does: every msgstr filled in (from ``words`` where the
    page shows one, else a stand-in for the translator's: the English), the header's Language
    set, and every fuzzy mark dropped."""
    header, *entries = read_po(path)
    language = path.parents[1].name
    header.msgstr[0] = header.msgstr[0].replace("\nLanguage: \n", f"\nLanguage: {language}\n")
    for entry in [header, *entries]:
        entry.flags.discard("fuzzy")
    for entry in entries:
        english = [entry.msgid, entry.msgid_plural or entry.msgid]
        for form, text in entry.msgstr.items():
            entry.msgstr[form] = text or words.get(entry.msgid) or english[min(form, 1)]
    path.write_text(format_po([header, *entries]), encoding="utf-8")


@pytest.mark.django_db
def test_translations_page(
    run_docs_page: Callable[..., Any],
    make_connection: Callable[..., Connection],
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    needs("xgettext")
    needs("msgfmt")
    # The reader's project: the module the page names, as a file makemessages reads, and the
    # catalog directory its prose says LOCALE_PATHS lists.
    project = tmp_path / "project"
    (project / "myproduct").mkdir(parents=True)
    (project / "myproduct/__init__.py").touch()
    (project / "myproduct/oauth_connect_words.py").write_text(
        block_starting("# myproduct/oauth_connect_words.py")
    )
    (project / "locale").mkdir()
    settings.LOCALE_PATHS = [str(project / "locale")]
    monkeypatch.chdir(project)
    # A checkout of oauth_connect, for the contributor's steps.
    checkout = tmp_path / "checkout"
    shutil.copytree(PACKAGE, checkout / "oauth_connect", ignore=shutil.ignore_patterns("*.pyc"))
    page_words = {e.msgid: e.msgstr[0] for e in parse_po(block_starting("#: myproduct/"))}
    restarted = []

    def cd(arguments: list[str]) -> None:
        # The contributor's block starts from the checkout's root.
        here = Path.cwd()
        base = here if here.is_relative_to(checkout) else checkout
        monkeypatch.chdir(base / arguments[0])

    def django_admin(arguments: list[str]) -> None:
        # django-admin in a checkout: no project settings, so no project LOCALE_PATHS.
        with override_settings(LOCALE_PATHS=[]):
            call_command(*arguments, stdout=io.StringIO())

    def editor(arguments: list[str]) -> None:
        [path] = arguments
        translate(Path.cwd() / path, page_words)

    def systemctl(arguments: list[str]) -> None:
        # In this process, the restart: the catalogs are read again, as at a process start.
        assert arguments[0] == "restart"
        settings.LOCALE_PATHS = list(settings.LOCALE_PATHS)  # setting_changed clears them
        restarted.append(arguments[1])

    def venv_python(arguments: list[str]) -> None:
        # The translation tests, on the contributor's checkout: every catalog in it passes.
        assert arguments[:2] == ["-m", "pytest"] and (ROOT / arguments[2]).is_file()
        for po in sorted(Path.cwd().glob("oauth_connect/locale/*/LC_MESSAGES/django.po")):
            work = tmp_path / f"check-{po.parents[1].name}"
            work.mkdir()
            assert catalog_problems(po) == [], po
            assert mo_differences(po, po.with_suffix(".mo"), work) == {}, po
            assert source_drift(Path.cwd() / "oauth_connect", po, work) == ([], []), po

    connection = make_connection(status=Connection.Status.REAUTH_REQUIRED)

    commands = {
        "cd": cd,
        "django-admin": django_admin,
        "$EDITOR": editor,
        "systemctl": systemctl,
        ".venv/bin/python": venv_python,
    }
    run = run_docs_page("translations.md", namespace={"connection": connection}, commands=commands)

    # What the samples printed is what the page shows.
    printed = capsys.readouterr().out.replace("\xa0", " ")
    assert printed == run.output_of("À reconnecter\n") + run.output_of("Intégrations\n")
    assert restarted == ["myproduct"]
    # The project's catalog holds its rewording; the contributor's German catalog is complete.
    assert (project / "locale/fr/LC_MESSAGES/django.mo").is_file()
    german = checkout / "oauth_connect/locale/de/LC_MESSAGES/django.po"
    assert german.with_suffix(".mo").is_file()
    assert len(parse_po(german.read_text())) == len(
        parse_po((PACKAGE / "locale/fr/LC_MESSAGES/django.po").read_text())
    )

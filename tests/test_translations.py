"""Translations: the pages render in French through the real views, the shipped French catalog is
complete, in step with the source, and compiled; what operators grep stays English."""

from __future__ import annotations

import ast
import gettext
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import responses
from django.contrib.messages import ERROR, SUCCESS
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import translation

from oauth_connect.models import Connection, ConnectionEvent
from tests.conftest import API_URL, TOKEN_URL, token_body

PACKAGE = Path(__file__).resolve().parents[1] / "oauth_connect"
FRENCH_PO = PACKAGE / "locale/fr/LC_MESSAGES/django.po"
FRENCH_MO = FRENCH_PO.with_suffix(".mo")
NBSP = "\xa0"  # French typography: before : ; ? ! and inside « »
Status = Connection.Status


def french(text: str) -> str:
    """``text`` with French no-break spaces made plain, so assertions read naturally."""
    return text.replace(NBSP, " ")


@pytest.fixture
def in_french() -> Iterator[None]:
    with translation.override("fr"):
        yield


def admin_messages(response: Any) -> list[tuple[int, str]]:
    return [(message.level, french(str(message))) for message in response.context["messages"]]


# The pages, in French --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("in_french")
def test_the_connections_page_renders_in_french(
    logged_in_client: Client, make_connection: Callable[..., Connection]
) -> None:
    make_connection(label="prod", status=Status.REAUTH_REQUIRED)

    html = french(logged_in_client.get(reverse("oauth_connect:list")).content.decode())

    assert '<html lang="fr">' in html
    assert "<h1>Connexions</h1>" in html
    assert "À reconnecter" in html  # the card's status
    assert (
        "Apicbase n’accepte plus l’accès que vous avez accordé : il a peut-être été retiré de "
        "son côté, ou il a expiré. Reconnectez-vous pour accorder l’accès à nouveau."
    ) in html
    assert ">Reconnecter</button>" in html
    assert "Needs reconnecting" not in html and "Reconnect to give access" not in html


@pytest.mark.django_db
def test_english_stays_the_default(
    logged_in_client: Client, make_connection: Callable[..., Connection]
) -> None:
    make_connection(status=Status.REAUTH_REQUIRED)

    html = logged_in_client.get(reverse("oauth_connect:list")).content.decode()

    assert "<h1>Connections</h1>" in html and "Needs reconnecting" in html
    assert "Connexions" not in html


@pytest.mark.django_db
@pytest.mark.usefixtures("in_french", "credential_providers")
def test_a_form_error_renders_in_french(
    logged_in_client: Client, make_connection: Callable[..., Connection]
) -> None:
    make_connection(provider="custobar", label="prod", expires_at=None)

    response = logged_in_client.post(
        reverse("oauth_connect:connect", kwargs={"provider": "custobar"}),
        {
            "company": "acme",
            "username": "alice",
            "password": "pw",
            "label": "prod",
            "password_storage": "keep",
        },
    )

    html = french(response.content.decode())
    assert response.status_code == 200
    assert (
        "« prod » désigne déjà l’une de vos connexions Custobar : choisissez un autre libellé, "
        "ou utilisez Reconnecter sur celle qui existe."
    ) in html
    assert "Nom d’utilisateur" in html and "Conservation du mot de passe" in html


@pytest.mark.django_db
@pytest.mark.usefixtures("in_french", "credential_providers")
def test_refused_credentials_are_reported_in_french(
    logged_in_client: Client, http_mock: responses.RequestsMock
) -> None:
    http_mock.add(
        responses.GET, "https://acme.custobar.test/api/auth/access-token/", status=401, json={}
    )

    response = logged_in_client.post(
        reverse("oauth_connect:connect", kwargs={"provider": "custobar"}),
        {
            "company": "acme",
            "username": "alice",
            "password": "wrong",
            "label": "",
            "password_storage": "keep",
        },
    )

    assert response.status_code == 200
    assert "Custobar n’a pas accepté ces identifiants. Vérifiez-les et réessayez." in french(
        response.content.decode()
    )
    assert not Connection.objects.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("in_french")
def test_the_admin_renders_in_french(
    admin_client: Client, make_connection: Callable[..., Connection]
) -> None:
    make_connection(status=Status.REAUTH_REQUIRED)

    html = french(
        admin_client.get(reverse("admin:oauth_connect_connection_changelist")).content.decode()
    )

    assert 'aria-label="Connexions par statut"' in html
    assert "Réautorisation requise" in html  # the status badge and its count
    assert "Expire dans la journée" in html
    assert "Actualiser maintenant" in html  # an action
    assert "Par fournisseur" in html  # Django's "By %(filter_title)s" with our title


@pytest.mark.django_db
@pytest.mark.usefixtures("in_french")
def test_admin_counts_use_french_plurals(
    admin_client: Client,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    connection = make_connection()
    http_mock.add(responses.POST, TOKEN_URL, json=token_body(2))

    response = admin_client.post(
        reverse("admin:oauth_connect_connection_changelist"),
        {"action": "refresh_now", "_selected_action": [connection.pk]},
        follow=True,
    )

    assert admin_messages(response) == [(SUCCESS, "1 connexion actualisée.")]
    forms = ("Disconnected %(count)d connection.", "Disconnected %(count)d connections.")
    assert translation.ngettext(*forms, 0) == "%(count)d connexion déconnectée."  # 0: singular
    assert translation.ngettext(*forms, 2) == "%(count)d connexions déconnectées."


@pytest.mark.django_db
@pytest.mark.usefixtures("in_french")
def test_the_admin_test_button_reports_in_french(
    admin_client: Client,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    connection = make_connection()
    http_mock.add(responses.GET, API_URL + "accounts/me/", json={"id": 7})

    response = admin_client.post(
        reverse("admin:oauth_connect_connection_test", args=[connection.pk]), follow=True
    )

    [(level, text)] = admin_messages(response)
    assert level == SUCCESS
    assert re.fullmatch(
        r"Apicbase a accepté le jeton : GET accounts/me/ a répondu HTTP 200 \(\d+ ms\)\.", text
    )


@pytest.mark.django_db
@pytest.mark.usefixtures("in_french")
def test_what_operators_grep_stays_english(
    admin_client: Client,
    make_connection: Callable[..., Connection],
    http_mock: responses.RequestsMock,
) -> None:
    """A refresh that fails during a French request: the stored last_error, the event log and the
    error shown (the same exception's text) stay English, as docs/translations.md says."""
    connection = make_connection()
    http_mock.add(responses.POST, TOKEN_URL, status=400, json={"error": "invalid_grant"})

    response = admin_client.post(
        reverse("admin:oauth_connect_connection_changelist"),
        {"action": "refresh_now", "_selected_action": [connection.pk]},
        follow=True,
    )

    [(level, text)] = admin_messages(response)
    connection.refresh_from_db()
    event = connection.events.get(kind=ConnectionEvent.Kind.REAUTH_REQUIRED)
    assert level == ERROR
    assert connection.last_error in text and connection.last_error in event.message
    assert "refused" in connection.last_error  # English, though the request was French
    assert "Réautorisation requise" in french(  # while the page around it is French
        admin_client.get(
            reverse("admin:oauth_connect_connection_change", args=[connection.pk])
        ).content.decode()
    )


# Every marked string is extractable ---------------------------------------------------------------

# How many leading arguments of each translating function are strings to extract.
TRANSLATING = {"_": 1, "gettext": 1, "gettext_lazy": 1, "gettext_noop": 1}
TRANSLATING |= {"ngettext": 2, "ngettext_lazy": 2, "pgettext": 2, "pgettext_lazy": 2}
TRANSLATING |= {"npgettext": 3, "npgettext_lazy": 3}


def test_every_translated_string_is_a_literal() -> None:
    """``_(f"...")`` or ``_("..." + x)`` can't be extracted, and would never match a msgid: the
    string must be a literal, with named placeholders filled in after translating."""
    offending = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in TRANSLATING:
                continue
            strings = node.args[: TRANSLATING[name]]
            if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in strings):
                offending.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offending == []


# The catalogs ------------------------------------------------------------------------------------
# Every catalog under oauth_connect/locale/ (French today): a contributed language is checked too.

CATALOGS = sorted(PACKAGE.glob("locale/*/LC_MESSAGES/django.po"))


def language_of(po: Path) -> str:
    return po.parents[1].name


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    comments: list[str] = field(default_factory=list)
    obsolete: bool = False

    @property
    def key(self) -> tuple[str | None, str, str | None]:
        return (self.msgctxt, self.msgid, self.msgid_plural)


KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")$')


def read_po(path: Path) -> list[Entry]:
    return parse_po(path.read_text(encoding="utf-8"))


def parse_po(text: str) -> list[Entry]:
    """The entries of a .po file (the header is the entry whose msgid is empty). Just what
    these tests need of gettext's syntax: keywords, continued strings, flags and comments. An
    entry ends where the next one's comments or msgctxt/msgid begin, blank line or not (a new
    catalog from makemessages may have none after its header)."""
    entries: list[Entry] = []
    entry, target = Entry(), ""
    for raw in text.splitlines():
        line, obsolete = raw.strip(), raw.startswith("#~")
        if obsolete:
            line = line[2:].strip()
        if not line:
            continue
        if entry.msgstr and line.startswith(("#", "msgctxt ", "msgid ")):
            entries.append(entry)
            entry, target = Entry(), ""
        entry.obsolete |= obsolete
        if line.startswith("#,"):
            entry.flags |= {flag.strip() for flag in line[2:].split(",")}
        elif line.startswith("#"):
            entry.comments.append(line)
        else:
            match = KEYWORD.match(line)
            if match:
                target, line = match.group(1), match.group(3)
                if target.startswith("msgstr"):
                    target = f"msgstr{match.group(2) or 0}"
            value = ast.literal_eval(line)  # a C string literal reads as a Python one
            if target.startswith("msgstr"):
                form = int(target[6:])
                entry.msgstr[form] = entry.msgstr.get(form, "") + value
            else:
                setattr(entry, target, (getattr(entry, target) or "") + value)
    if entry.msgstr:
        entries.append(entry)
    return entries


PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def catalog_problems(po: Path) -> list[str]:
    """What keeps ``po`` from being a complete translation: an untranslated, fuzzy or obsolete
    entry, a placeholder lost or invented, a header that doesn't say its language and plurals."""
    header, *entries = read_po(po)
    metadata = header.msgstr.get(0, "")
    plurals = re.search(r"^Plural-Forms: nplurals=(\d+);", metadata, re.M)
    problems = []
    if header.msgid or "fuzzy" in header.flags:
        problems.append("the header is missing or marked fuzzy")
    if f"\nLanguage: {language_of(po)}\n" not in metadata:
        problems.append(f"the header doesn't say Language: {language_of(po)}")
    if not plurals:
        problems.append("the header has no Plural-Forms")
    for entry in entries:
        forms = int(plurals.group(1)) if plurals and entry.msgid_plural else 1
        if entry.obsolete:
            problems.append(f"obsolete: {entry.msgid!r}")
        if "fuzzy" in entry.flags:
            problems.append(f"fuzzy: {entry.msgid!r}")
        if sorted(entry.msgstr) != list(range(forms)) or not all(entry.msgstr.values()):
            problems.append(f"untranslated: {entry.msgid!r}")
        for translated in entry.msgstr.values():
            # msgfmt --check-format checks this too, where gettext is installed.
            if set(PLACEHOLDER.findall(translated)) != set(PLACEHOLDER.findall(entry.msgid)):
                problems.append(f"placeholders differ: {entry.msgid!r} → {translated!r}")
    return problems


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def source_drift(package: Path, po: Path, work: Path) -> tuple[list[Any], list[Any]]:
    """``(missing, left over)``: the msgids makemessages finds in a copy of ``package`` that
    ``po`` lacks, and those ``po`` has that the code no longer uses."""
    copy = work / "oauth_connect"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "locale"))
    (copy / "locale").mkdir()
    # As in a checkout, with no project settings adding their LOCALE_PATHS.
    with override_settings(LOCALE_PATHS=[]), working_directory(copy):
        call_command("makemessages", locale=[language_of(po)], add_location="file", verbosity=0)
    extracted = {e.key for e in read_po(copy / "locale" / po.relative_to(package / "locale"))}
    committed = {entry.key for entry in read_po(po)}
    return sorted(extracted - committed, key=str), sorted(committed - extracted, key=str)


def mo_differences(po: Path, mo: Path, work: Path) -> dict[str, Any]:
    """The entries where the committed ``mo`` differs from ``po`` compiled afresh by msgfmt."""
    fresh = work / "fresh.mo"
    subprocess.run(
        [shutil.which("msgfmt") or "msgfmt", "--check-format", "-o", fresh, po], check=True
    )
    with mo.open("rb") as committed, fresh.open("rb") as compiled:
        old, new = (gettext.GNUTranslations(f)._catalog for f in (committed, compiled))
    return {
        str(key): (old.get(key), new.get(key))
        for key in old.keys() | new.keys()
        if old.get(key) != new.get(key)
    }


def needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs GNU gettext's {tool} (apt-get install gettext); .ci/run installs it")


def test_french_ships() -> None:
    assert FRENCH_PO in CATALOGS and FRENCH_MO.is_file()
    assert len(read_po(FRENCH_PO)) > 100


@pytest.mark.parametrize("po", CATALOGS, ids=language_of)
def test_the_catalog_is_complete(po: Path) -> None:
    assert catalog_problems(po) == []


@pytest.mark.parametrize("po", CATALOGS, ids=language_of)
def test_the_catalog_has_every_string_of_the_source(po: Path, tmp_path: Path) -> None:
    """makemessages, run on a copy of the package, finds exactly the committed msgids: none
    missing (a new string nobody translated), none left over (a string the code dropped)."""
    needs("xgettext")
    missing, left_over = source_drift(PACKAGE, po, tmp_path)
    assert missing == [], "new strings: run makemessages and translate (docs/translations.md)"
    assert left_over == [], "strings the code no longer has: run makemessages"


@pytest.mark.parametrize("po", CATALOGS, ids=language_of)
def test_the_committed_mo_is_the_compiled_po(po: Path, tmp_path: Path) -> None:
    needs("msgfmt")
    assert mo_differences(po, po.with_suffix(".mo"), tmp_path) == {}, "run compilemessages"

"""What the tests of the docs/providers/ pages share: reading a page's settings table, and the
environment its settings samples read."""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest

from oauth_connect.providers.base import Provider
from tests.conftest import KEY
from tests.docs.harness import DOCS

TABLE_ROW = re.compile(r"^\| *(`[A-Z_]+`(?:, *`[A-Z_]+`)*) *\| *(.*?) *\|\s*$", re.M)


def settings_table(page: str) -> dict[str, str]:
    """The page's provider settings table: each key (a row may name several) → its default
    cell, as written."""
    text = (DOCS / page).read_text()
    return {
        key.strip("` "): default
        for keys, default in TABLE_ROW.findall(text)
        for key in keys.split(",")
    }


def documented_default(cell: str) -> Any:
    """The default a cell states: the Python literal it opens with, or None for "none"."""
    if cell.startswith("none"):
        return None
    literal = re.match(r"`([^`]+)`", cell)
    assert literal, f"the default cell {cell!r} opens with neither a literal nor 'none'"
    return ast.literal_eval(literal.group(1))


def assert_table_tells_the_truth(page: str, provider_class: type[Provider]) -> None:
    """The table lists every setting the provider reads, each with its real default."""
    table = settings_table(page)
    defaults = provider_class.default_settings
    assert sorted(table) == sorted(defaults), f"docs/{page}: the settings table's keys"
    for key, cell in table.items():
        assert documented_default(cell) == defaults[key], f"docs/{page}: default of {key}"


def point_samples_at(monkeypatch: pytest.MonkeyPatch, site_url: str, **env: str) -> None:
    """The environment the page's settings samples read: the encryption key, the site whose
    sandbox the development settings use, and anything else the page names."""
    monkeypatch.setenv("OAUTH_CONNECT_KEYS", KEY)
    monkeypatch.setenv("SITE_URL", site_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def matches_output(shown: str, printed: str) -> bool:
    """Whether ``printed`` is what a ``text`` block shows, timings aside (``12 ms``)."""
    pattern = re.escape(shown.strip()).replace(r"\ ", " ")
    pattern = re.sub(r"\d+ ms", r"\\d+ ms", pattern)
    return re.fullmatch(pattern, printed.strip()) is not None


def page_says(page: str, text: str) -> bool:
    """Whether the page's prose contains ``text`` (however its lines are wrapped)."""
    prose = " ".join((DOCS / page).read_text().split())
    return " ".join(text.split()) in prose

"""docs/index.md lists every page; the links of the pages this module covers land on a heading
that exists (test_pages.py checks the files, not the #anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.harness import DOCS, pages

LINK = re.compile(r"\]\(([^)\s:]*?)(?:#([^)\s]+))?\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-") for heading in headings
    }


def test_the_index_links_to_every_page() -> None:
    linked = {target for target, _ in LINK.findall((DOCS / "index.md").read_text()) if target}
    assert sorted(set(pages()) - {"index.md"} - linked) == []


@pytest.mark.parametrize(
    "page", ["index.md", "quickstart.md", "choosing.md", "configuration.md", "upgrading.md"]
)
def test_every_anchor_lands_on_a_heading(page: str) -> None:
    for target, anchor in LINK.findall((DOCS / page).read_text()):
        if anchor:
            path = (DOCS / page).parent / target if target else DOCS / page
            assert anchor in anchors(path), f"docs/{page} → {target}#{anchor}"

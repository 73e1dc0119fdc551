"""Every docs page's samples have a test that runs them, and every link between pages lands."""

from __future__ import annotations

import re

import pytest

from tests.docs.harness import DOCS, ROOT, blocks, pages

RUNNABLE = {"python", "sh", "cron", "django", "json", "text"}


@pytest.mark.parametrize("page", pages())
def test_every_sample_has_a_language_the_harness_runs(page: str) -> None:
    assert [str(b) for b in blocks(page) if b.language not in RUNNABLE] == []


@pytest.mark.parametrize("page", [page for page in pages() if blocks(page)])
def test_every_page_with_samples_has_a_test_that_runs_them(page: str) -> None:
    tests = "".join(path.read_text() for path in (ROOT / "tests/docs").glob("test_*.py"))
    literal = "".join(
        path.read_text()
        for path in (ROOT / "tests/docs").glob("test_*.py")
        if "from tests.docs.literal import" in path.read_text()
    )
    followed = f'run_docs_page("{page}"' in tests or f'PAGE = "{page}"' in literal
    assert followed, f"no test runs docs/{page}: add one here"


@pytest.mark.parametrize("page", pages())
def test_every_relative_link_lands(page: str) -> None:
    text = (DOCS / page).read_text()
    for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text):
        assert ((DOCS / page).parent / target).resolve().exists(), f"docs/{page} → {target}"

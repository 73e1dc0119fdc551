from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.docs.harness import PageRun, run_page

# The live sandbox (and a person logged in to it) that the pages' samples talk to.
from tests.e2e.conftest import browser, sandbox  # noqa: F401


@pytest.fixture
def run_docs_page(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., PageRun]:
    """``run_docs_page("quickstart.md", namespace={...}, commands={...})``: see harness.py."""

    def run(page: str, **kwargs: Any) -> PageRun:
        return run_page(page, settings, monkeypatch, **kwargs)

    return run

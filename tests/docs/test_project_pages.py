"""The pages about working on oauth_connect itself: their commands are the ones CI runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.docs.harness import ROOT

CI_SCRIPT = (ROOT / ".ci/run").read_text()


def ci_runs(arguments: list[str]) -> None:
    command = " ".join([".venv/bin/python", *arguments])
    assert command in CI_SCRIPT, f"{command!r} is not what .ci/run runs"


def test_reliability_page_runs_the_suites_ci_runs(run_docs_page: Callable[..., Any]) -> None:
    run_docs_page("reliability.md", commands={".venv/bin/python": ci_runs})


def test_performance_page_installs_an_extra_that_exists(run_docs_page: Callable[..., Any]) -> None:
    run_docs_page("performance.md")

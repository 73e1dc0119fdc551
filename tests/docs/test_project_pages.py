"""The pages about working on oauth_connect itself, and the README: their commands are the ones
CI runs, or exist as written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import get_commands

from example_project import settings as example_settings
from tests.docs.harness import ROOT, _check_pip_install, _manage

CI_SCRIPT = (ROOT / ".ci/run").read_text()


def ci_runs(arguments: list[str]) -> None:
    command = " ".join([".venv/bin/python", *arguments])
    assert command in CI_SCRIPT, f"{command!r} is not what .ci/run runs"


def test_reliability_page_runs_the_suites_ci_runs(run_docs_page: Callable[..., Any]) -> None:
    run_docs_page("reliability.md", commands={".venv/bin/python": ci_runs})


def test_performance_page_installs_an_extra_that_exists(run_docs_page: Callable[..., Any]) -> None:
    run_docs_page("performance.md")


def readme_commands() -> dict[str, Callable[[list[str]], Any]]:
    """The README's commands, each checked against what exists, or run where that is cheap."""

    def venv_python(arguments: list[str]) -> Any:
        if arguments[:2] == ["-m", "venv"]:
            return None  # creating the venv: the CI script does exactly this
        if arguments[:1] == ["manage.py"]:
            if arguments[1] == "runserver":  # serves forever: check it is there, don't start it
                assert "runserver" in get_commands()
                return None
            return _manage(arguments[1:])
        assert arguments[:2] == ["-m", "pytest"], arguments
        paths = [word for word in arguments[2:] if not word.startswith("-")]
        if not paths:
            return ci_runs(arguments)
        for path in paths:
            assert (ROOT / path).is_dir(), f"no test directory {path}"
        return None

    def venv_pip(arguments: list[str]) -> None:
        assert arguments[0] == "install"
        _check_pip_install(arguments[1:])

    def gate(tool: str) -> Callable[[list[str]], None]:
        def run(arguments: list[str]) -> None:
            command = " ".join([f".venv/bin/{tool}", *arguments])
            assert command in CI_SCRIPT, f"{command!r} is not a gate .ci/run runs"

        return run

    def tox(arguments: list[str]) -> None:
        assert arguments == []
        assert "envlist" in (ROOT / "tox.ini").read_text()

    return {
        "python3": venv_python,
        ".venv/bin/python": venv_python,
        ".venv/bin/pip": venv_pip,
        ".venv/bin/ruff": gate("ruff"),
        ".venv/bin/mypy": gate("mypy"),
        "tox": tox,
    }


@pytest.mark.django_db
def test_readme_commands_are_the_ones_that_work(
    run_docs_page: Callable[..., Any], settings: Any
) -> None:
    settings.OAUTH_CONNECT = example_settings.OAUTH_CONNECT  # setup_demo registers its clients
    run = run_docs_page("../README.md", commands=readme_commands())
    [chain] = run.output_of("setup_demo")
    assert "log in as demo / demo" in chain[2]  # setup_demo ran and said so

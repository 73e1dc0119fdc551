"""Runs every code sample of a docs page, in page order, so a sample that stops working fails a
test. Each page has a test module here (``test_<page>.py``) that prepares what the page's prose
assumes (a tenant, a connected connection, a fake provider) and calls :func:`run_page`.

What each fenced block's language means:

- ``python``: executed. A block whose first line is ``# settings.py`` is a settings sample: its
  upper-case names are applied to the test settings and ``manage.py check`` must then pass
  (``INSTALLED_APPS`` and ``MIDDLEWARE`` are checked to name only what the test project has;
  ``LOGGING`` is left for the page's test to apply and undo).
  ``# urls.py`` becomes the root URLconf; ``# myapp/tenants.py`` becomes the module
  ``myapp.tenants`` (for settings that name a dotted path). Every other block runs in one
  namespace per page.
- ``sh``: each line (``$ `` prompts and ``#`` comments aside) is run: ``python manage.py ...``
  through ``call_command``; ``pip install oauth_connect[extra]`` checks the extra exists;
  ``export NAME=value`` and a ``NAME=value`` prefix set the variable; ``a && b`` runs both.
  Anything else needs a handler from the page's test.
- ``cron``: the command after the five schedule fields, as an ``sh`` line (``cd ... &&`` and
  output redirection dropped).
- ``django``: a template, rendered with the page namespace as its context.
- ``json``: parsed.
- ``text``: output shown to the reader; not code, not run.

A block with any other language, or none, fails the page: a sample nobody runs can rot.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import metadata
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.template import engines
from django.urls import clear_url_caches

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
SETTINGS_ONLY_CHECKED = {"INSTALLED_APPS", "MIDDLEWARE"}
# Returned for the page's test to apply in a scope it undoes, not set: since Django 6.1, changing
# LOGGING in a test reconfigures logging for the whole process.
SETTINGS_NOT_APPLIED = {"LOGGING", "LOGGING_CONFIG"}
NOT_CODE = {"text"}


@dataclass
class Block:
    page: str
    line: int
    language: str
    code: str

    def __str__(self) -> str:
        return f"docs/{self.page}, line {self.line} ({self.language or 'no language'})"


def pages() -> list[str]:
    """Every docs page, as a path relative to docs/."""
    return sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))


def blocks(page: str) -> list[Block]:
    text = (DOCS / page).read_text()
    return [
        Block(page, text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2))
        for match in FENCE.finditer(text)
    ]


@dataclass
class PageRun:
    """What running a page produced, block by block, for the page's test to assert on."""

    namespace: dict[str, Any]
    outputs: list[tuple[Block, Any]] = field(default_factory=list)

    def output_of(self, needle: str) -> Any:
        """The output of the one block whose code contains ``needle``."""
        return self._one(needle)[1]

    def code_of(self, needle: str) -> str:
        """The code of the one block that contains ``needle`` (e.g. a template to install)."""
        return self._one(needle)[0].code

    def _one(self, needle: str) -> tuple[Block, Any]:
        found = [(block, output) for block, output in self.outputs if needle in block.code]
        assert len(found) == 1, f"{len(found)} blocks contain {needle!r}"
        return found[0]


def run_page(
    page: str,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    namespace: dict[str, Any] | None = None,
    commands: dict[str, Callable[[list[str]], Any]] | None = None,
) -> PageRun:
    """Run every block of ``docs/<page>`` in order. Tests call it through the ``run_docs_page``
    fixture (tests/docs/conftest.py). ``namespace`` holds what the prose says exists;
    ``commands`` maps a shell command's first word to a handler taking its arguments."""
    page_blocks = blocks(page)
    assert page_blocks, f"docs/{page} has no code samples: it needs no test module"
    run = PageRun(namespace=dict(namespace or {}))
    for block in page_blocks:
        try:
            output = _run_block(block, settings, monkeypatch, run, commands or {})
            run.outputs.append((block, output))
        except AssertionError as err:
            raise AssertionError(f"{block}: {err}") from err
        except Exception as err:
            raise AssertionError(f"{block} failed: {type(err).__name__}: {err}") from err
    return run


def _run_block(
    block: Block,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    run: PageRun,
    commands: dict[str, Callable[[list[str]], Any]],
) -> Any:
    if block.language == "sh":
        lines = _shell_lines(block.code)
    elif block.language == "cron":
        lines = [_cron_command(line) for line in _shell_lines(block.code)]
    else:
        return _run_non_shell(block, settings, monkeypatch, run)
    return [_run_shell_line(line, commands, monkeypatch) for line in lines]


def _run_non_shell(
    block: Block, settings: Any, monkeypatch: pytest.MonkeyPatch, run: PageRun
) -> Any:
    if block.language == "python":
        first_line = block.code.split("\n", 1)[0].strip()
        if first_line.startswith("# settings.py"):
            return _apply_settings(block, settings)
        if first_line.startswith("# urls.py"):
            return _install_urls(block, settings, monkeypatch)
        module_path = re.match(r"# ([\w/]+)\.py\b", first_line)
        if module_path:
            return _install_module(module_path.group(1).replace("/", "."), block, monkeypatch)
        exec(compile(block.code, str(block), "exec"), run.namespace)  # noqa: S102
        return None
    if block.language == "django":
        return engines["django"].from_string(block.code).render(run.namespace)
    if block.language == "json":
        return json.loads(block.code)
    if block.language in NOT_CODE:
        return block.code
    raise AssertionError(
        f"no runner for language {block.language!r}: use python, sh, cron, django, json, or "
        "text for output"
    )


def _apply_settings(block: Block, settings: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    exec(compile(block.code, str(block), "exec"), values)  # noqa: S102
    applied = {name: value for name, value in values.items() if name.isupper()}
    for name, value in applied.items():
        if name in SETTINGS_ONLY_CHECKED:
            unknown = set(value) - set(getattr(django_settings, name))
            assert not unknown, f"{name} names {sorted(unknown)}, which the test project lacks"
        elif name not in SETTINGS_NOT_APPLIED:
            setattr(settings, name, value)
    call_command("check", stdout=io.StringIO())
    return applied


def _install_urls(block: Block, settings: Any, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = _install_module(f"docs_urls_{block.line}", block, monkeypatch)
    assert isinstance(getattr(module, "urlpatterns", None), list), "defines no urlpatterns"
    settings.ROOT_URLCONF = module.__name__
    clear_url_caches()
    return module


def _install_module(name: str, block: Block, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Make the block importable as ``name`` (and its parent packages) for this test only."""
    parts = name.split(".")
    for depth in range(1, len(parts)):
        parent = ".".join(parts[:depth])
        if parent not in sys.modules:
            package = types.ModuleType(parent)
            package.__path__ = []
            monkeypatch.setitem(sys.modules, parent, package)
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    if len(parts) > 1:  # ``import_string("a.b.C")`` finds b as an attribute of package a
        monkeypatch.setattr(sys.modules[".".join(parts[:-1])], parts[-1], module, raising=False)
    exec(compile(block.code, str(block), "exec"), module.__dict__)  # noqa: S102
    return module


def _shell_lines(code: str) -> list[str]:
    lines = [line.strip().removeprefix("$ ") for line in code.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _cron_command(line: str) -> str:
    command = line.split(None, 5)[5]
    command = re.sub(r"^cd \S+ && ", "", command)
    return re.sub(r"\s*(>>?|2>&1).*$", "", command)


def _run_shell_line(
    line: str, commands: dict[str, Callable[[list[str]], Any]], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Run one line; ``a && b`` runs each command in turn (a failure fails the sample)."""
    chain: list[list[str]] = [[]]
    for word in shlex.split(line, comments=True):
        if word == "&&":
            chain.append([])
        else:
            chain[-1].append(word)
    outputs = [_run_command(words, commands, monkeypatch) for words in chain]
    return outputs[0] if len(outputs) == 1 else outputs


def _run_command(
    words: list[str],
    commands: dict[str, Callable[[list[str]], Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):  # NAME=value command: set for this page
        monkeypatch.setenv(*words.pop(0).split("=", 1))
    if words[:2] == ["python", "manage.py"]:
        return _manage(words[2:])
    if words[:2] == ["pip", "install"]:
        return _check_pip_install(words[2:])
    if words[0] == "export":
        name, value = words[1].split("=", 1)
        monkeypatch.setenv(name, value)
        return None
    if words[0] in commands:
        return commands[words[0]](words[1:])
    raise AssertionError(f"no runner for the command {shlex.join(words)!r}")


def _manage(arguments: list[str]) -> str:
    stdout = io.StringIO()
    call_command(*arguments, stdout=stdout, stderr=io.StringIO())
    return stdout.getvalue()


def _check_pip_install(arguments: list[str]) -> None:
    extras = metadata("oauth_connect").get_all("Provides-Extra") or []
    for requirement in arguments:
        if requirement == "-e":  # an editable install of this checkout: "-e .[extra]"
            continue
        match = re.fullmatch(r"(?:oauth[_-]connect|\.)(?:\[([\w,]+)\])?", requirement)
        assert match, f"pip install {requirement}: the docs install only oauth_connect"
        for extra in (match.group(1) or "").split(","):
            assert not extra or extra in extras, f"pyproject.toml has no extra {extra!r}"

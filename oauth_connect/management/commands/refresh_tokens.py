"""Refresh every connection that expires soon. Run it from cron, e.g. every 15 minutes."""

from __future__ import annotations

import json
from argparse import ArgumentParser, ArgumentTypeError
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from ... import conf
from ..._internal.durations import parse_duration
from ..._internal.forked import ChildFailed, can_fork
from ...providers import registry
from ...services.batch import batches_supported
from ...services.bulk import RefreshResult, refresh_due_connections


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise ArgumentTypeError(str(err)) from err


def _check_providers(provider_ids: list[str] | None) -> None:
    # A typo would otherwise find nothing due, which looks like success.
    unknown = [pid for pid in provider_ids or [] if not registry.is_configured(pid)]
    if unknown:
        configured = ", ".join(registry.configured_ids()) or "none"
        raise CommandError(
            f"--provider {', '.join(unknown)}: no such provider in OAUTH_CONNECT['PROVIDERS'] "
            f"(configured: {configured})."
        )


def _check_tenant(value: str) -> None:
    tenant_model = apps.get_model(conf.tenant_model_label())
    name = tenant_model._meta.verbose_name
    try:
        pk = tenant_model._meta.pk.to_python(value)
    except ValidationError:
        raise CommandError(f"--tenant {value!r} is not a valid {name} primary key.") from None
    try:
        exists = tenant_model._default_manager.filter(pk=pk).exists()
    except OverflowError:  # SQLite: an integer beyond 64 bits
        exists = False
    if not exists:
        raise CommandError(f"--tenant {value}: there is no {name} with this primary key.")


def _check_processes(processes: int, workers: int) -> None:
    if processes < 1:
        raise CommandError("--processes must be 1 or more.")
    if processes == 1:
        return
    if not batches_supported():
        raise CommandError("--processes needs PostgreSQL; on this database use --workers.")
    if not can_fork():
        raise CommandError("--processes needs a system that can fork (Linux, macOS).")
    if processes > workers:
        raise CommandError(
            f"--processes {processes} splits --workers between them: give at least "
            f"--workers {processes}."
        )


class Command(BaseCommand):
    help = "Refresh the tokens of every connection that expires within --within (default 1d)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--within",
            type=_duration,
            default=timedelta(days=1),
            help="Refresh tokens expiring within this (90s, 30m, 6h, 1d). Default: 1d.",
        )
        parser.add_argument(
            "--provider",
            action="append",
            dest="providers",
            metavar="ID",
            help="Only this provider (repeat for several).",
        )
        parser.add_argument("--tenant", help="Only connections of the tenant with this pk.")
        parser.add_argument(
            "--dry-run", action="store_true", help="List what is due; change nothing."
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="Refresh this many connections at once (threads). Default: 1.",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help=(
                "Split the run (and --workers) between this many processes, for fast token "
                "endpoints where one process's CPU is the limit. PostgreSQL only. Default: 1."
            ),
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="Print one JSON document (for monitoring) instead of text.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] < 1:
            raise CommandError("--workers must be 1 or more.")
        _check_processes(options["processes"], options["workers"])
        _check_providers(options["providers"])
        if options["tenant"] is not None:
            _check_tenant(options["tenant"])
        as_json = options["as_json"]
        per_line = not as_json and options["verbosity"] >= 1

        def progress(result: RefreshResult) -> None:
            if per_line:
                self.stdout.write(self._line(result))

        try:
            summary = refresh_due_connections(
                options["within"],
                providers=options["providers"],
                tenant=options["tenant"],
                workers=options["workers"],
                processes=options["processes"],
                dry_run=options["dry_run"],
                on_result=progress,
                # The JSON document lists every connection; text is printed as it happens, so
                # only counts are kept (constant memory for any number of connections).
                keep_results=as_json,
            )
        except ChildFailed as err:
            raise CommandError(
                f"{err} What they refreshed is stored; run the command again for the rest."
            ) from None
        report = summary.as_dict()
        if as_json:
            self.stdout.write(json.dumps({"dry_run": options["dry_run"], **report}, default=str))
        else:
            text = (
                f"{report['due']} due, {report['refreshed']} refreshed, "
                f"{report['skipped']} skipped, {report['failed']} failed"
                + (" (dry run)" if options["dry_run"] else "")
            )
            style = self.style.ERROR if summary.failed else self.style.SUCCESS
            self.stdout.write(style(text))
        if summary.failed:
            raise SystemExit(1)

    def _line(self, result: RefreshResult) -> str:
        label = f" ({result.label})" if result.label else ""
        text = f"{result.provider}{label} #{result.connection_id}: {result.outcome}"
        if result.error:
            return self.style.ERROR(f"{text}: {result.error}")
        return text

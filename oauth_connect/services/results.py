"""What a bulk refresh reports: one result per connection, and the run's counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..models import Connection


@dataclass
class RefreshResult:
    """What happened to one connection."""

    connection_id: int
    provider: str
    tenant_id: Any
    label: str
    # "refreshed"; "skipped" (not due after all, refreshed or held by another worker, not in
    # use, deleted); "failed"; "due" (dry run)
    outcome: str
    status: str
    error: str = ""


@dataclass
class RefreshSummary:
    """Counts per outcome, and each result unless the run was told not to keep them (so a run
    over any number of connections stays in constant memory)."""

    counts: Counter[str] = field(default_factory=Counter)
    results: list[RefreshResult] = field(default_factory=list)
    keep_results: bool = True

    def add(self, result: RefreshResult) -> None:
        self.counts[result.outcome] += 1
        if self.keep_results:
            self.results.append(result)

    def count(self, outcome: str) -> int:
        return self.counts[outcome]

    @property
    def failed(self) -> int:
        return self.count("failed")

    def as_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "due": self.counts.total(),
            "refreshed": self.count("refreshed"),
            "skipped": self.count("skipped"),
            "failed": self.failed,
        }
        if self.keep_results:
            report["connections"] = [vars(result) for result in self.results]
        return report


def result_for(connection: Connection, outcome: str, error: str = "") -> RefreshResult:
    """``connection``'s result, from what is loaded of it (a bare ``Connection(pk=...)`` for a
    row that is gone reports no provider and no status)."""
    return RefreshResult(
        connection_id=connection.pk,
        provider=connection.__dict__.get("provider", ""),
        tenant_id=connection.__dict__.get("tenant_id"),
        label=connection.__dict__.get("label", ""),
        outcome=outcome,
        status=connection.__dict__.get("status", "") if connection.tenant_id else "",
        error=error,
    )

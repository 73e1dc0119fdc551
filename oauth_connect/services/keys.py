"""Key rotation: re-encrypt every stored secret with the first key."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps
from django.db import transaction

from .. import crypto
from ..fields import Ciphertext, EncryptedTextField

BATCH = 500


@dataclass
class RotationReport:
    rows: int = 0
    rotated: int = 0
    failures: list[str] = field(default_factory=list)


def rotate_encryption_keys() -> RotationReport:
    """Re-encrypt every ``EncryptedTextField`` value of every installed model. Values no key
    decrypts are reported and left as they are. Never holds plaintext beyond one value."""
    report = RotationReport()
    for model in apps.get_models():
        names = [
            f.attname for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)
        ]
        if names:
            _rotate_model(model, names, report)
    return report


def _rotate_model(model: type, names: list[str], report: RotationReport) -> None:
    last = 0
    while True:
        rows = list(
            # The base manager: a custom default manager that filters rows must not hide any.
            model._base_manager.filter(pk__gt=last)  # type: ignore[attr-defined]
            .order_by("pk")
            .values_list("pk", *names)[:BATCH]
        )
        for pk, *values in rows:
            changes, unchanged = {}, {}
            for name, value in zip(names, values, strict=True):
                if not value:
                    continue
                try:
                    changes[name] = Ciphertext(crypto.reencrypt(value))
                    unchanged[name] = value
                except crypto.UndecryptableValue:
                    report.failures.append(
                        f"{model._meta.label} #{pk} {name}: no configured key decrypts it."  # type: ignore[attr-defined]
                    )
            if changes:
                # Only if nobody rewrote the row meanwhile (a refresh rotating a token): never
                # put an old token back. A rewritten value is already under the first key.
                with transaction.atomic():
                    manager = model._base_manager  # type: ignore[attr-defined]
                    if manager.filter(pk=pk, **unchanged).update(**changes):
                        report.rotated += len(changes)
            report.rows += 1
        if len(rows) < BATCH:
            return
        last = rows[-1][0]

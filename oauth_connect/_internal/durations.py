"""Parse ``--within`` style durations: ``90s``, ``30m``, ``6h``, ``1d``, ``2w`` or seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> timedelta:
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 30m, 6h, 1d or 2w.")
    number, unit = match.groups()
    return timedelta(**{_UNITS[unit or "s"]: float(number)})

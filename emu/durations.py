"""Durations as people write them ("90", "2h", "7d", "1w", "1h30m", "2.5s"): one parser for every command and file.

Units: ``w`` weeks, ``d`` days, ``h`` hours, ``m``/``min`` minutes, ``s`` seconds; a bare number takes the
caller's default unit (seconds for timeouts and TTLs, minutes for the KMS intervals, which the protocol
counts in minutes). Parts add up: ``1h30m`` is 5400 seconds, as in BIND's TTL syntax.
"""

from __future__ import annotations

import re

from emu.errors import UsageError

__all__ = ["UNIT_SECONDS", "parse_duration"]

#: Seconds in each unit.
UNIT_SECONDS = {"w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "min": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(min|[wdhms])?", re.IGNORECASE)
_WHOLE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*(?:min|[wdhms])?\s*)+", re.IGNORECASE)


def parse_duration(value: object, name: str, *, default_unit: str = "s") -> float:
    """Seconds from a duration (a number in ``default_unit``, or text with units).

    Args:
        value: the duration (int, float or text).
        name: the setting's name, for the error message (e.g. ``--timeout``).
        default_unit: the unit of a bare number.

    Raises:
        UsageError: not a duration, or negative.
    """
    scale = UNIT_SECONDS[default_unit]
    if isinstance(value, bool):
        raise UsageError(f"{name}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value) * scale
    else:
        text = str(value).strip()
        if not text or not _WHOLE.fullmatch(text):
            raise UsageError(
                f"{name}: {value!r} is not a duration (e.g. 90, 90s, 2h, 7d, 1w, 1h30m; "
                f"a plain number is in {'seconds' if default_unit == 's' else 'minutes' if default_unit == 'm' else default_unit})"
            )
        seconds = sum(
            float(amount) * (UNIT_SECONDS[unit.lower()] if unit else scale) for amount, unit in _PART.findall(text)
        )
    if seconds < 0:
        raise UsageError(f"{name}: {value!r} must not be negative")
    return seconds

"""Durations as people read them on the pages: one unit chosen by size ("40 s", "45 min",
"10.8 h", "3.2 d"), at most one decimal. The JSON keeps its numbers (hours or seconds);
only the pages use these words.

- under a minute: seconds; under an hour: minutes (whole);
- under 48 hours: hours, so a day's threshold reads "24 h"; from 48 hours: days.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DASH", "axis", "duration", "hours"]

DASH = "–"  # no value
MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0


def _decimal(value: float) -> str:
    """One decimal, without a trailing ".0": 10.8, 24, 3.2."""
    return f"{value:.1f}".removesuffix(".0")


def duration(seconds: float | None) -> str:
    """``seconds`` in one unit chosen by size; "–" for None."""
    if seconds is None:
        return DASH
    seconds = max(float(seconds), 0.0)
    if round(seconds) < MINUTE:
        return f"{round(seconds)} s"
    if round(seconds / MINUTE) < MINUTE:
        return f"{round(seconds / MINUTE)} min"
    if round(seconds / HOUR, 1) < 48:
        return f"{_decimal(seconds / HOUR)} h"
    return f"{_decimal(seconds / DAY)} d"


def hours(value: float | None) -> str:
    """A duration given in hours (as the reports' JSON holds them), in words."""
    return duration(None if value is None else value * HOUR)


def axis(values_in_hours: Iterable[float | None]) -> tuple[float, str]:
    """The unit for a chart's axis of durations in hours, chosen by the largest: the
    hours in one unit and its name ("minutes", "hours" or "days")."""
    largest = max((v for v in values_in_hours if v is not None), default=0.0)
    if largest < 1:
        return MINUTE / HOUR, "minutes"
    if largest < 48:
        return 1.0, "hours"
    return DAY / HOUR, "days"

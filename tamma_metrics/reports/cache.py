"""The reports' shared cache: a report computed at most once per REPORTS_CACHE_SECONDS
for the same parameters and time zone, in every process sharing Django's cache."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from ..conf import app_settings

__all__ = ["remembered"]


def remembered(report: str, parameters: Iterable[str], compute: Callable[[], Any]) -> Any:
    """The cached value of ``compute()`` (0 seconds turns the cache off)."""
    seconds = float(app_settings.REPORTS_CACHE_SECONDS)
    if seconds <= 0:
        return compute()
    key = ":".join(["tamma_metrics", report, timezone.get_current_timezone_name(), *parameters])
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, seconds)
    return value

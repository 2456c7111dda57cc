"""The catalogue as ``MetricFamily`` rows: what permissions are granted on."""

from __future__ import annotations

from typing import Any

from .. import catalogue
from ..models import MetricFamily

__all__ = ["sync_metric_families"]


def sync_metric_families(**kwargs: Any) -> int:
    """Create or update one MetricFamily row per catalogue family and runtime pattern."""
    rows = {
        family.name: {
            "kind": family.kind.value,
            "audience": family.audience.value,
            "help_text": family.help,
        }
        for family in catalogue.families()
    }
    for pattern, help_text in catalogue.RUNTIME_PATTERNS.items():
        rows[pattern] = {
            "kind": "",
            "audience": catalogue.Audience.OPERATIONS.value,
            "help_text": help_text,
        }
    existing = {row.name: row for row in MetricFamily.objects.all()}
    created = 0
    for name, fields in rows.items():
        row = existing.get(name)
        if row is None:
            MetricFamily.objects.create(name=name, **fields)
            created += 1
        elif any(getattr(row, field) != value for field, value in fields.items()):
            MetricFamily.objects.filter(pk=row.pk).update(**fields)
    return created

"""The metric families as an operator reviews them: type, help, audience, the roles that
see each, its admitted series against its cap and its overflow count."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .. import catalogue, labels
from ..models import MetricFamily, MetricFamilyGroupPermission
from ..models.access import VIEW_PERMISSION
from .health import self_metrics

__all__ = ["families"]


def families() -> list[dict[str, Any]]:
    """One row per catalogue family and runtime pattern, in the catalogue's order (3
    queries and a read of the folder's self-metrics)."""
    roles: dict[str, set[str]] = defaultdict(set)
    grants = MetricFamilyGroupPermission.objects.filter(
        permission__codename=VIEW_PERMISSION
    ).values_list("content_object__name", "group__name")
    for name, role in grants:
        roles[name].add(role)
    rows = {row.name: row for row in MetricFamily.objects.all()}
    series = labels.admitted_series()
    overflow = self_metrics()["label_overflow"]
    result = []
    for family in catalogue.families():
        row = rows.get(family.name)
        recorded = family.source is catalogue.Source.EVENT
        result.append(
            {
                "name": family.name,
                "exposed_as": family.full_name,
                "kind": family.kind.value,
                "help": family.help,
                "audience": family.audience.value,
                "labels": list(family.labels),
                "roles": sorted(roles.get(family.name, ())),
                "series": series.get(family.name, 0) if recorded else None,
                "series_cap": labels.max_series(family.name) if recorded else None,
                "overflow": overflow.get(family.name, 0) if recorded else None,
                "max_series_override": row.max_series if row else None,
            }
        )
    for pattern, help_text in catalogue.RUNTIME_PATTERNS.items():
        result.append(
            {
                "name": pattern,
                "exposed_as": pattern,
                "kind": "",
                "help": help_text,
                "audience": catalogue.Audience.OPERATIONS.value,
                "labels": [],
                "roles": sorted(roles.get(pattern, ())),
                "series": None,
                "series_cap": None,
                "overflow": None,
                "max_series_override": None,
            }
        )
    return result

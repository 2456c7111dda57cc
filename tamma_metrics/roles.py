"""Role presets: Django groups with view permissions on metric families."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from guardian.shortcuts import assign_perm

from . import catalogue
from .access import VIEW_PERMISSION, sync_metric_families
from .models import MetricFamily

PROMETHEUS, OPERATOR, PRODUCT_MANAGER = "prometheus", "operator", "product-manager"
WORKER = "worker"  # reports events through the ingest API; sees no family
ORCHESTRATOR = "orchestrator"  # writes Tamma's state (and reports events); sees no family


def preset_families() -> dict[str, set[str]]:
    """Role name -> MetricFamily names it sees."""
    every = {f.name for f in catalogue.families()} | set(catalogue.RUNTIME_PATTERNS)
    business = {f.name for f in catalogue.families() if f.audience is catalogue.Audience.BUSINESS}
    return {PROMETHEUS: every, OPERATOR: every, PRODUCT_MANAGER: business}


def grant(group: Group, families: list[MetricFamily] | set[str]) -> int:
    """Grant view on families (rows or names) to a role; returns how many were new."""
    rows = (
        list(MetricFamily.objects.filter(name__in=families))
        if isinstance(families, set)
        else families
    )
    had = set(
        MetricFamily.objects.filter(metricfamilygrouppermission__group=group).values_list(
            "pk", flat=True
        )
    )
    new = [row for row in rows if row.pk not in had]
    if new:
        # guardian takes a QuerySet of objects too (its docstring); its annotation says Model.
        assign_perm(
            VIEW_PERMISSION,
            group,
            MetricFamily.objects.filter(pk__in=[r.pk for r in new]),  # type: ignore[arg-type]
        )
    return len(new)


def seed_roles() -> dict[str, int]:
    """Create the preset roles and their grants; idempotent."""
    sync_metric_families()
    granted = {}
    for name, families in preset_families().items():
        group, _ = Group.objects.get_or_create(name=name)
        granted[name] = grant(group, families)
    add_event, change_domain = (
        Permission.objects.get(content_type__app_label="tamma_metrics", codename=codename)
        for codename in ("add_event", "change_domain")
    )
    Group.objects.get_or_create(name=WORKER)[0].permissions.add(add_event)
    Group.objects.get_or_create(name=ORCHESTRATOR)[0].permissions.add(add_event, change_domain)
    return granted

"""Pages for people, in the admin's look and linked from its index: velocity, delivery,
health and the metric families. Staff only; what a page shows follows the same MetricFamily
permissions as /metrics (``access.visible_families``). The figures come from
``reports``, which the summary API serves too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import mark_safe

from . import access, catalogue
from .reports import charts, delivery, families, health, units, velocity
from .reports.charts import Series
from .reports.units import duration

__all__ = ["delivery_page", "duration", "families_page", "health_page", "velocity_page"]

OUTCOME_NAMES = {"success": "Succeeded", "failure": "Failed", "timeout": "Timed out"}


def _page(
    request: HttpRequest, template: str, title: str, status: int = 200, **context: Any
) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": title, **context}
    return TemplateResponse(request, f"tamma_metrics/reports/{template}", context, status=status)


def _visible(request: HttpRequest, names: Any) -> set[str]:
    return access.visible_families(access.Caller(request.user, "session"), names)


def _partial_week(days: int) -> str:
    """What a partial week holds: its whole days before today, and today so far."""
    before = days - 1
    if not before:
        return "today so far"
    return f"{before} day{'s' if before > 1 else ''} and today so far"


def _durations(
    title: str,
    x_labels: list[str],
    named: list[tuple[str, list[float | None]]],
    chart: Any = charts.lines,
) -> str:
    """A chart of durations given in hours, its axis in minutes, hours or days (chosen by
    the largest), each mark's tooltip in words."""
    size, unit = units.axis(v for _, values in named for v in values)
    series = [
        Series(
            name,
            [None if v is None else round(v / size, 2) for v in values],
            [units.hours(v) for v in values],
        )
        for name, values in named
    ]
    return chart(title, x_labels, series, unit)


def _velocity_charts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each chart with the rows of its table (the same numbers, durations in words)."""
    days = [row["day"][5:] for row in report["completed_per_day"]]
    throughput = report["throughput_per_week"]
    weeks = [row["week_start"][5:] for row in throughput]
    partial = {
        index: f"Partial week: {_partial_week(row['days'])}"
        for index, row in enumerate(throughput)
        if row.get("partial")
    }
    per_day = report["completed_per_day"]
    cycle, lead = report["cycle_time_hours"], report["lead_time_hours"]
    prs = report["pull_requests_per_day"]
    waits = report["approval_wait_hours"]
    hours = units.hours
    return [
        {
            "id": "completed",
            "svg": charts.bars(
                "Issues completed per day, by outcome",
                days,
                [Series(name, [r[key] for r in per_day]) for key, name in OUTCOME_NAMES.items()],
                "issues per day",
            ),
            "columns": ["Day", *OUTCOME_NAMES.values()],
            "rows": [[row["day"], *(row[key] for key in OUTCOME_NAMES)] for row in per_day],
        },
        {
            "id": "throughput",
            "svg": charts.bars(
                "Throughput per week (7-day weeks from the window's first day)",
                weeks,
                [Series("Completed", [row["completed"] for row in throughput])],
                "issues per week",
                partial=partial,
            ),
            "columns": ["Week from", "Days", "Completed", "Succeeded", "Week"],
            "rows": [
                [
                    row["week_start"],
                    row["days"],
                    row["completed"],
                    row["succeeded"],
                    f"partial: {_partial_week(row['days'])}" if row.get("partial") else "whole",
                ]
                for row in throughput
            ],
        },
        {
            "id": "cycle",
            "svg": _durations(
                "Cycle and lead time per week",
                weeks,
                [
                    ("Cycle median", [row["median"] for row in cycle]),
                    ("Cycle p95", [row["p95"] for row in cycle]),
                    ("Lead median", [row["median"] for row in lead]),
                    ("Lead p95", [row["p95"] for row in lead]),
                ],
            ),
            "columns": [
                "Week from",
                "Issues",
                "Cycle median",
                "Cycle p95",
                "Lead median",
                "Lead p95",
            ],
            "rows": [
                [
                    c["week_start"],
                    c["count"],
                    hours(c["median"]),
                    hours(c["p95"]),
                    hours(le["median"]),
                    hours(le["p95"]),
                ]
                for c, le in zip(cycle, lead, strict=True)
            ],
        },
        {
            "id": "prs",
            "svg": charts.lines(
                "Pull requests opened and merged per day",
                days,
                [
                    Series("Opened", [row["opened"] for row in prs]),
                    Series("Merged", [row["merged"] for row in prs]),
                ],
                "pull requests per day",
            ),
            "columns": ["Day", "Opened", "Merged"],
            "rows": [[row["day"], row["opened"], row["merged"]] for row in prs],
        },
        {
            "id": "approvals",
            "svg": _durations(
                "Approval wait, median by type",
                [row["approval_type"] for row in waits],
                [("Median", [row["median"] for row in waits])],
                chart=charts.bars,
            ),
            "columns": ["Approval type", "Decided", "Median", "p95"],
            "rows": [
                [row["approval_type"], row["count"], hours(row["median"]), hours(row["p95"])]
                for row in waits
            ],
        },
    ]


def _days_select(windows: tuple[int, ...], days: int) -> dict[str, Any]:
    return {
        "name": "days",
        "title": "Window",
        "options": [(str(d), f"last {d} days", d == days) for d in windows],
    }


def _filter_form(filters: velocity.Filters) -> list[dict[str, Any]]:
    """The filter selects, with the current choice selected."""
    selects = [_days_select(velocity.WINDOWS, filters.days)]
    for label in ("provider", "platform", "issue_type"):
        current = getattr(filters, label)
        options = [("", "any", not current)]
        options += [
            (value, shown, value == current)
            for value, shown in catalogue.VOCABULARIES[label].items()
        ]
        selects.append({"name": label, "title": label.replace("_", " ").capitalize(),
                        "options": options})  # fmt: skip
    return selects


@staff_member_required
def velocity_page(request: HttpRequest) -> HttpResponse:
    if _visible(request, velocity.FAMILIES) != set(velocity.FAMILIES):
        raise PermissionDenied("Velocity needs permission to see the business families.")
    try:
        filters = velocity.Filters.parse(request.GET)
    except velocity.FilterError as error:
        return _page(
            request,
            "velocity.html",
            "Velocity",
            status=400,
            error={"field": error.field, "message": str(error)},
            form=_filter_form(velocity.Filters()),
        )
    report = velocity.cached(filters)
    percent = {
        "success": _percent(report["totals"]["success_rate"]),
        "first_merge": _percent(report["first_time_merge"]["rate"]),
        "autonomy": _percent(report["autonomy"]["rate"]),
    }
    providers = [
        {
            **row,
            "success": _percent(row["success_rate"]),
            "median_cycle": units.hours(row["median_cycle_hours"]),
        }
        for row in report["providers"]
    ]
    to_merge = report["time_to_merge_hours"]
    merge = {"median": units.hours(to_merge["median"]), "p95": units.hours(to_merge["p95"])}
    until = datetime.fromisoformat(report["window"]["until"])
    for chart in (rows := _velocity_charts(report)):
        chart["svg"] = mark_safe(chart["svg"])  # noqa: S308 - built with escape()
    return _page(
        request,
        "velocity.html",
        "Velocity",
        report=report,
        charts=rows,
        form=_filter_form(filters),
        percent=percent,
        providers=providers,
        merge=merge,
        until=until,
    )


KEY_NAMES = {
    "deployment_frequency": ("Deployment frequency", "per day"),
    "lead_time_hours": ("Lead time for changes", "median"),
    "change_failure_rate": ("Change failure rate", ""),
    "recovery_time_hours": ("Failed deployment recovery", "median"),
}


def _key_value(key: str, value: float | None) -> str:
    if value is None:
        return "–"
    if key == "change_failure_rate":
        return _percent(value)
    if key.endswith("_hours"):
        return units.hours(value)
    return f"{value:g}"


def _threshold(key: str, limit: float) -> str:
    if key == "change_failure_rate":
        return f"{limit * 100:g}% or less"
    if key == "deployment_frequency":
        period = {1.0: "a day", 7.0: "a week", 30.0: "a month"}.get(round(1 / limit, 6))
        return f"once {period} or more" if period else f"{limit:.4g} a day or more"
    return f"under {units.hours(limit)}"


def _delivery_keys(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each key with its band, the window before, and the band thresholds in words."""
    rows = []
    for key, (name, unit) in KEY_NAMES.items():
        now, before = report["keys"][key], report["previous_keys"][key]
        limits = report["bands"][key]
        rows.append(
            {
                "id": key.replace("_", "-"),
                "name": name,
                "unit": unit,
                "value": _key_value(key, now["value"]),
                "band": now["band"] or "no data",
                "previous": _key_value(key, before["value"]),
                "previous_band": before["band"] or "no data",
                "thresholds": [
                    (band, _threshold(key, limits[band])) for band in ("elite", "high", "medium")
                ],
            }
        )
    return rows


def _delivery_charts(report: dict[str, Any]) -> list[dict[str, Any]]:
    per_day = report["deployments_per_day"]
    stages = report["stages"]
    waiting = report["waiting"]["providers"]
    hours = units.hours
    return [
        {
            "id": "deployments",
            "svg": charts.bars(
                "Production deployments per day",
                [row["day"][5:] for row in per_day],
                [
                    Series("Deployed", [row["deployed"] for row in per_day]),
                    Series("Failed", [row["failed"] for row in per_day]),
                ],
                "deployments per day",
            ),
            "columns": ["Day", "Deployed", "Failed, rolled back or with an incident"],
            "rows": [[row["day"], row["deployed"], row["failed"]] for row in per_day],
        },
        {
            "id": "stages",
            "svg": _durations(
                "Pull-request stages",
                [row["stage"] for row in stages],
                [
                    ("Median", [row["p50_hours"] for row in stages]),
                    ("p95", [row["p95_hours"] for row in stages]),
                ],
                chart=charts.bars,
            ),
            "columns": ["Stage", "Pull requests", "Median", "p95"],
            "rows": [
                [
                    row["stage"],
                    row["pull_requests"],
                    hours(row["p50_hours"]),
                    hours(row["p95_hours"]),
                ]
                for row in stages
            ],
        },
        {
            "id": "waiting",
            "svg": _durations(
                "Agent working and waiting for a person, by provider (issues completed)",
                [row["provider"] for row in waiting],
                [
                    ("Working", [row["working_hours"] for row in waiting]),
                    ("Waiting", [row["waiting_hours"] for row in waiting]),
                ],
                chart=charts.bars,
            ),
            "columns": [
                "Provider",
                "Issues",
                "Working",
                "Waiting",
                "Approvals",
                "Reviews",
                "Escalations",
            ],  # fmt: skip
            "rows": [
                [
                    row["provider"],
                    row["issues"],
                    hours(row["working_hours"]),
                    hours(row["waiting_hours"]),
                    *(hours(value) for value in row["waiting_for"].values()),
                ]
                for row in waiting
            ],
        },
    ]


@staff_member_required
def delivery_page(request: HttpRequest) -> HttpResponse:
    if _visible(request, delivery.FAMILIES) != set(delivery.FAMILIES):
        raise PermissionDenied("Delivery needs permission to see the delivery families.")
    try:
        days = delivery.parse(request.GET)
    except velocity.FilterError as error:
        return _page(
            request,
            "delivery.html",
            "Delivery",
            status=400,
            error={"field": error.field, "message": str(error)},
            form=[_days_select(delivery.WINDOWS, 30)],
        )
    report = delivery.cached(days)
    form = [_days_select(delivery.WINDOWS, days)]
    for chart in (rows := _delivery_charts(report)):
        chart["svg"] = mark_safe(chart["svg"])  # noqa: S308 - built with escape()
    providers = [
        {**row, "failure": _percent(row["change_failure_rate"])} for row in report["providers"]
    ]
    return _page(
        request,
        "delivery.html",
        "Delivery",
        report=report,
        keys=_delivery_keys(report),
        charts=rows,
        form=form,
        providers=providers,
        waiting=_in_words(report["waiting"]),
        waiting_share=_percent(report["waiting"]["waiting_share"]),
        until=datetime.fromisoformat(report["window"]["until"]),
    )


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def _in_words(waiting: dict[str, Any]) -> dict[str, Any]:
    """The waiting figures' hours in words (``..._hours`` keys, and ``waiting_for``)."""
    shown: dict[str, Any] = {
        key: units.hours(value) for key, value in waiting.items() if key.endswith("_hours")
    }
    shown["waiting_for"] = {key: units.hours(v) for key, v in waiting["waiting_for"].items()}
    return shown


@staff_member_required
def health_page(request: HttpRequest) -> HttpResponse:
    visible = _visible(request, set(health.SECTIONS.values()))
    if not visible:
        raise PermissionDenied("Health needs permission to see one of its families.")
    report = health.restricted(health.health(), visible)
    for row in [*report.get("approvals", []), *report.get("recent_escalations", [])]:
        row["age"] = duration(row.get("oldest_age_seconds", row.get("age_seconds")))
    if report.get("last_scrape"):
        report["last_scrape"]["when"] = datetime.fromtimestamp(report["last_scrape"]["time"], UTC)
    report["rules"]["approval_wait_critical"] = duration(
        report["rules"]["approval_wait_critical_seconds"]
    )
    approvals = report.get("approvals", [])
    chart = None
    if approvals:
        chart = mark_safe(  # noqa: S308 - built with escape()
            charts.bars(
                "Pending approvals by type",
                [row["approval_type"] for row in approvals],
                [Series("Pending", [row["pending"] for row in approvals])],
                "approvals",
            )
        )
    return _page(request, "health.html", "System health", report=report, chart=chart)


@staff_member_required
def families_page(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("tamma_metrics.view_metricfamily"):
        raise PermissionDenied("The metric families page needs the view permission on them.")
    rows = families.families()
    policies = reverse("admin:tamma_metrics_labelpolicy_changelist")
    for row in rows:
        # The policies of its labels: the general ones and any for this family alone.
        labels = ",".join(row["labels"])
        row["policy_url"] = f"{policies}?label__in={labels}" if labels else None
    return _page(request, "families.html", "Metric families", families=rows)

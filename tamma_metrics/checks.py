"""System checks with stable ids (``tamma_metrics.E001`` ...)."""

from __future__ import annotations

import os
import re
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from . import catalogue
from .conf import DEFAULTS, app_settings, cache_weakness, parse_port, worker_processes
from .scrape import conformance, multiprocess

RATE = re.compile(r"^[1-9][0-9]*/[smhd]$")
# Caches that one process cannot share with another, or that cannot count atomically.
WEAKNESSES = {
    "private": "is private to each process",
    "approximate": "cannot count atomically",
}


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []
    user = getattr(settings, "TAMMA_METRICS", {}) or {}
    if not isinstance(user, dict):
        return [Error("TAMMA_METRICS must be a dict.", id="tamma_metrics.E001")]
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"Unknown TAMMA_METRICS keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="tamma_metrics.E002",
            )
        )
    try:
        prefix = app_settings.PREFIX
        enabled = app_settings.ENABLED
        auth = app_settings.AUTH_ENABLED
    except ValueError as exc:
        return [*errors, Error(str(exc), id="tamma_metrics.E003")]
    if not isinstance(prefix, str) or (prefix and not catalogue.METRIC_NAME.match(prefix)):
        errors.append(
            Error(
                f"PREFIX {prefix!r} is not a valid metric name prefix.",
                hint="Use letters, digits and underscores, e.g. 'tamma_'.",
                id="tamma_metrics.E004",
            )
        )
    if not isinstance(enabled, bool) or not isinstance(auth, bool):
        errors.append(Error("ENABLED and AUTH_ENABLED must be booleans.", id="tamma_metrics.E005"))
    for name in ("THROTTLE_RATE", "FAILED_AUTH_RATE", "API_THROTTLE_RATE"):
        rate = getattr(app_settings, name)
        if not isinstance(rate, str) or not RATE.match(rate):
            errors.append(
                Error(
                    f"{name} {rate!r} is not a rate.",
                    hint="Use requests per period, e.g. '120/m' (s, m, h or d).",
                    id="tamma_metrics.E009",
                )
            )
    try:
        catalogue.build(app_settings.CUSTOM_FAMILIES)
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="tamma_metrics.E010"))
    for name in ("DEFAULT_MAX_SERIES", "DEFAULT_MAX_VALUES"):
        value = getattr(app_settings, name)
        if not isinstance(value, int) or value < 1:
            errors.append(Error(f"{name} must be a positive integer.", id="tamma_metrics.E011"))
    try:
        parse_port(app_settings.METRICS_PORT)
    except ValueError as exc:
        errors.append(Error(str(exc), id="tamma_metrics.E012"))
    budget = app_settings.DATABASE_BUDGET_SECONDS
    cache_seconds = app_settings.DATABASE_CACHE_SECONDS
    if (
        isinstance(budget, bool)
        or not isinstance(budget, int | float)
        or budget <= 0
        or isinstance(cache_seconds, bool)
        or not isinstance(cache_seconds, int | float)
        or cache_seconds < 0
    ):
        errors.append(
            Error(
                "DATABASE_BUDGET_SECONDS must be a positive number and "
                "DATABASE_CACHE_SECONDS a number >= 0.",
                id="tamma_metrics.E013",
            )
        )
    errors += _check_max_event_values()
    errors += _check_redaction()
    for name in (
        "LOOP_HEARTBEAT_TTL_SECONDS",
        "HEALTH_DATABASE_SECONDS",
        "HEALTH_APPROVAL_WAIT_CRITICAL_SECONDS",
        "HEALTH_ESCALATIONS_PER_HOUR_DEGRADED",
        "HEALTH_QUEUE_DEPTH_DEGRADED",
    ):
        value = getattr(app_settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            errors.append(Error(f"{name} must be a positive number.", id="tamma_metrics.E006"))
    return errors


# What to do about each unusable PROMETHEUS_MULTIPROC_DIR (E007), by FolderError.problem.
FOLDER_HINTS = {
    "empty": "Set it to a folder the site's processes share, or remove the variable to "
    "record in one process only (single-process mode).",
    "missing": "Create it (and empty it) before the processes start.",
    "not_a_folder": "Point it at a folder, created (and emptied) before the processes start.",
}


@register(Tags.compatibility)
def check_multiprocess_dir(app_configs: Any = None, **kwargs: Any) -> list:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path is None:
        return _check_single_process()
    try:
        multiprocess.check_folder(path)
    except multiprocess.FolderError as exc:
        if not exc.writable:
            return [Error(str(exc), id="tamma_metrics.E008")]
        return [Error(str(exc), hint=FOLDER_HINTS[exc.problem], id="tamma_metrics.E007")]
    return []


def _check_single_process() -> list:
    """Single-process mode is right for one process; W003 when the site says it runs
    more (WORKER_PROCESSES, else WEB_CONCURRENCY: ``conf.worker_processes``)."""
    processes = worker_processes()
    if processes < 2:
        return []
    said_by = "WORKER_PROCESSES" if app_settings.WORKER_PROCESSES else "WEB_CONCURRENCY"
    return [
        Warning(
            f"PROMETHEUS_MULTIPROC_DIR is not set while the site runs {processes} processes "
            f"({said_by}={processes}): each records events in its own registry, and a scrape "
            "shows only the events of the process that answers it.",
            hint="Set PROMETHEUS_MULTIPROC_DIR to a folder the processes share, created (and "
            "emptied) before they start (docs/serving.md).",
            id="tamma_metrics.W003",
        )
    ]


@register(Tags.compatibility)
def check_prometheus_client(app_configs: Any = None, **kwargs: Any) -> list:
    """The installed prometheus_client merges multiprocess files as the reader mirrors."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None:
        return []  # single-process mode: the reader is not used
    problem = conformance.differences()
    if problem:
        return [
            Error(
                problem,
                hint="Install the prometheus-client release tamma-metrics pins; until then "
                "scrapes use prometheus_client's slower MultiProcessCollector.",
                id="tamma_metrics.E016",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_auth_enabled(app_configs: Any = None, **kwargs: Any) -> list:
    try:
        auth = app_settings.AUTH_ENABLED
    except ValueError:
        return []  # reported by check_settings
    if not auth and not settings.DEBUG:
        return [
            Warning(
                "Authentication on /metrics is off outside DEBUG: anyone can read "
                "the business metrics.",
                hint="Remove METRICS_AUTH_ENABLED=false in production.",
                id="tamma_metrics.W001",
            )
        ]
    return []


@register(Tags.caches)
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list:
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    weakness = cache_weakness()
    if settings.DEBUG or weakness is None:
        return []
    return [
        Warning(
            f"The default cache ({backend}) {WEAKNESSES[weakness]}: permission changes "
            "reach other processes only when their cache expires, throttles count per "
            "process (each takes its share of the rate, WORKER_PROCESSES) or approximately, "
            "and limits meant across hosts (failed logins, the API) hold per host only.",
            hint="Use Redis as the default cache: CACHE_URL=redis://HOST:6379/0 in the "
            "demo site, django.core.cache.backends.redis.RedisCache in yours "
            "(pip install tamma-metrics[redis]; docs/serving.md#several-hosts).",
            id="tamma_metrics.W002",
        )
    ]


def _check_max_event_values() -> list:
    limits = app_settings.MAX_EVENT_VALUES
    known = set(DEFAULTS["MAX_EVENT_VALUES"])
    if (
        not isinstance(limits, dict)
        or set(limits) - known
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1e300
            for v in limits.values()
        )
    ):
        return [
            Error(
                f"MAX_EVENT_VALUES must map some of {sorted(known)} to positive finite numbers.",
                id="tamma_metrics.E014",
            )
        ]
    return []


def _check_redaction() -> list:
    patterns = app_settings.REDACT_LABEL_PATTERNS
    problem = None
    if not isinstance(patterns, list | tuple) or not all(isinstance(p, str) for p in patterns):
        problem = "REDACT_LABEL_PATTERNS must be a list of regular expressions."
    else:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                problem = f"REDACT_LABEL_PATTERNS: {pattern!r} is not a regular expression: {exc}"
                break
    value = app_settings.REDACTED_VALUE
    if problem is None and (not isinstance(value, str) or not value.strip()):
        problem = "REDACTED_VALUE must be a non-empty string."
    return [Error(problem, id="tamma_metrics.E015")] if problem else []

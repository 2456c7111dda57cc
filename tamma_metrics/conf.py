"""Settings of tamma_metrics: one ``TAMMA_METRICS`` dict over ``DEFAULTS``.

Read through ``app_settings``; a few 12-factor values may also come from the
environment. ``reset()`` is the one reset of the app's module-level state: each module
that keeps some registers its own with ``on_reset``; it runs on ``setting_changed`` (so
``override_settings`` works) and between tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

__all__ = [
    "DEFAULTS",
    "ENV_OVERRIDES",
    "app_settings",
    "cache_weakness",
    "max_event_value",
    "on_reset",
    "parse_bool",
    "parse_port",
    "reset",
    "worker_processes",
]

DEFAULTS: dict[str, Any] = {
    # Master switch: when false, recording is a no-op and /metrics answers 404.
    "ENABLED": True,
    # Prefix of every family name. Read once, when the instruments are built.
    "PREFIX": "tamma_",
    # Authentication on /metrics (enforced by the access-control layer).
    "AUTH_ENABLED": True,
    # The value of the ``environment`` label of build_info.
    "ENVIRONMENT": "development",
    # An AutonomousLoop counts as active while its heartbeat is younger than this.
    "LOOP_HEARTBEAT_TTL_SECONDS": 300,
    # Label values are cut to this many characters.
    "MAX_LABEL_VALUE_LENGTH": 64,
    # Requests per authenticated principal (token or user); "N/s", "N/m", "N/h", "N/d".
    "THROTTLE_RATE": "120/m",
    # Failed authentication attempts per client IP, checked before any password hash.
    "FAILED_AUTH_RATE": "10/m",
    # While the database does not answer, a caller whose same credentials were verified
    # this recently is still let in (its families as they were then); others get 503.
    "RECENTLY_VERIFIED_SECONDS": 300,
    # Processes serving the site on one host (gunicorn's WEB_CONCURRENCY when unset).
    # When the default cache is private to each process (locmem), each process enforces
    # its share of THROTTLE_RATE, API_THROTTLE_RATE and FAILED_AUTH_RATE, so together
    # they let through at most the configured rate; a shared cache counts them as one.
    "WORKER_PROCESSES": None,
    # Series (label combinations) a family may have unless its MetricFamily row says otherwise.
    "DEFAULT_MAX_SERIES": 1000,
    # Distinct values a free-form label may take unless its LabelPolicy says otherwise.
    "DEFAULT_MAX_VALUES": 100,
    # How often each process looks for label policy and cap edits made in the admin.
    "POLICY_REFRESH_SECONDS": 5,
    # Most seconds the database gauges may take in one scrape (less when Prometheus'
    # X-Prometheus-Scrape-Timeout-Seconds leaves less); past it they are left out.
    "DATABASE_BUDGET_SECONDS": 5,
    # Database gauges are cached this long in the default cache, shared by workers, hosts
    # and Prometheus servers; 0 queries the database on every scrape.
    "DATABASE_CACHE_SECONDS": 5,
    # The host project's own families: [{"name", "type", "help", "labels", "buckets"}].
    "CUSTOM_FAMILIES": [],
    # API: requests per token or user. Ingest: events per request, body size, how long an
    # event_id is remembered, the longest duration accepted, how far ahead a timestamp
    # may be (clock skew).
    "API_THROTTLE_RATE": "600/m",
    "INGEST_MAX_BATCH": 1000,
    "INGEST_MAX_BODY_BYTES": 1_048_576,
    "INGEST_DEDUP_SECONDS": 86_400,
    # The longest duration one event may report (API and record alike): 30 days. Spans
    # between a row's times (an approval's wait, a recovery) are not bounded by it.
    "INGEST_MAX_DURATION_SECONDS": 2_592_000,
    # The most one event may report, per kind of number; more is refused (400 from the
    # API, a logged rejection counted in metrics_errors_total{stage="rejected"} from
    # record), so no input can push a counter to +Inf. Keys given here replace these.
    "MAX_EVENT_VALUES": {
        "cost_usd": 1_000,  # US dollars of one AI request
        "tokens": 10_000_000,  # tokens of one type in one AI request
        "count": 1_000_000,  # code changes in one event
        "file_count": 100_000,  # files of one code generation
        "value": 1_000_000_000,  # record.metric: one increment, observation or |gauge|
    },
    "INGEST_MAX_FUTURE_SECONDS": 300,
    # Items per request of the state API (POST /api/v1/issues and the like); a batch is one
    # transaction, so this bounds how long it holds its rows.
    "STATE_MAX_BATCH": 500,
    # Free-form label values that look like personal data or secrets (emails, URLs with
    # credentials or a query, API keys and tokens) are recorded as REDACTED_VALUE; more
    # regular expressions to redact (see tamma_metrics.redaction).
    "REDACT_LABEL_PATTERNS": [],
    "REDACTED_VALUE": "redacted",
    # Push backends: {"statsd": {...}, "otel": {...}} (see tamma_metrics.backends).
    "BACKENDS": {},
    # Events waiting for the backends; past it they are dropped for the backends only.
    "BACKEND_QUEUE_SIZE": 10_000,
    # A port (the server binds it too) on which only /metrics and /metrics/health answer;
    # None: no such port. Enforced by MetricsPortMiddleware.
    "METRICS_PORT": None,
    # The health page's overall status (see tamma_metrics.reports.health): critical when
    # the database does not answer within HEALTH_DATABASE_SECONDS or the oldest pending
    # approval has waited longer than HEALTH_APPROVAL_WAIT_CRITICAL_SECONDS; degraded
    # from HEALTH_ESCALATIONS_PER_HOUR_DEGRADED escalations in the last hour or
    # HEALTH_QUEUE_DEPTH_DEGRADED queued issues, or with no active loop.
    "HEALTH_DATABASE_SECONDS": 1.0,
    # How long a velocity report is reused for the same filters (0: computed each time).
    "REPORTS_CACHE_SECONDS": 60,
    # Webhooks (POST /api/v1/webhooks/<platform>): the secret of each platform that may
    # send them ({"github": "..."}); a platform without one is refused (403).
    "WEBHOOK_SECRETS": {},
    # A GitHub issue with this label is an incident.
    "WEBHOOK_INCIDENT_LABEL": "incident",
    # How long a webhook delivery id is remembered (GitHub redelivers up to 3 days back).
    "WEBHOOK_DEDUP_SECONDS": 604_800,
    # The largest webhook body taken (bytes); larger ones answer 413.
    "WEBHOOK_MAX_BYTES": 1_048_576,
    # Nesting past which a webhook body is refused (400) before it is parsed; the
    # platforms' payloads nest about 6 deep.
    "WEBHOOK_MAX_DEPTH": 32,
    # Deployment environments that are production, by name, matched case-insensitively;
    # a deployment whose tier is "production" (GitLab's environment_tier) is one too.
    "PRODUCTION_ENVIRONMENTS": ["production", "prod"],
    "HEALTH_APPROVAL_WAIT_CRITICAL_SECONDS": 86_400,
    "HEALTH_ESCALATIONS_PER_HOUR_DEGRADED": 5,
    "HEALTH_QUEUE_DEPTH_DEGRADED": 100,
}

# Environment variables that override a setting, and how to parse them.
ENV_OVERRIDES: dict[str, str] = {
    "METRICS_ENABLED": "ENABLED",
    "METRICS_PREFIX": "PREFIX",
    "METRICS_AUTH_ENABLED": "AUTH_ENABLED",
    "METRICS_ENVIRONMENT": "ENVIRONMENT",
    "METRICS_PORT": "METRICS_PORT",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(raw: str, name: str) -> bool:
    """Parse an environment flag strictly: a typo must not silently open /metrics."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use true or false)")


def parse_port(raw: Any, name: str = "METRICS_PORT") -> int | None:
    """A TCP port from a setting or the environment; None or "" means no port."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).strip().isdigit():
        raise ValueError(f"{name}={raw!r} is not a port number")
    port = int(str(raw).strip())
    if not 1 <= port <= 65535:
        raise ValueError(f"{name}={raw!r} is not a port number (1-65535)")
    return port


class AppSettings:
    """Lazy view of the settings; attribute access returns the effective value."""

    def __getattr__(self, name: str) -> Any:
        # Called only on a miss: the value is then stored on the instance, so the
        # recording hot path reads settings as plain attributes.
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown tamma_metrics setting: {name}")
        value = self._resolve(name)
        setattr(self, name, value)
        return value

    def _resolve(self, name: str) -> Any:
        user = getattr(settings, "TAMMA_METRICS", {}) or {}
        value = user.get(name, DEFAULTS[name])
        for env_name, setting_name in ENV_OVERRIDES.items():
            if setting_name == name and env_name in os.environ:
                raw = os.environ[env_name]
                value = parse_bool(raw, env_name) if isinstance(DEFAULTS[name], bool) else raw
        return value

    def reload(self) -> None:
        self.__dict__.clear()


app_settings = AppSettings()


def worker_processes() -> int:
    """Processes serving the site on this host: WORKER_PROCESSES, else gunicorn's
    WEB_CONCURRENCY, else 1 (a value that is not a number counts as 1)."""
    configured = app_settings.WORKER_PROCESSES or os.environ.get("WEB_CONCURRENCY") or 1
    try:
        return max(1, int(configured))
    except (TypeError, ValueError):
        return 1


_max_values: dict[str, float] = {}  # read on every recorded number: built once

# The longest span between two times of Tamma's work (an issue's cycle, an approval's wait,
# a recovery): rows' times lie between 2000 and now, so a real one is never longer; the
# histograms count what lies above their top bucket in +Inf, never reject it.
SPAN_MAX_SECONDS = 100 * 366 * 86_400.0


def max_event_value(kind: str) -> float:
    """The largest number one event may report for ``kind`` (a key of MAX_EVENT_VALUES,
    "duration_seconds" for an ingested event's duration, or "span_seconds" for a span
    between two times of a row)."""
    found = _max_values.get(kind)
    if found is None:
        if kind == "span_seconds":
            found = SPAN_MAX_SECONDS
        elif kind == "duration_seconds":
            found = float(app_settings.INGEST_MAX_DURATION_SECONDS)
        else:
            limits = {**DEFAULTS["MAX_EVENT_VALUES"], **(app_settings.MAX_EVENT_VALUES or {})}
            found = float(limits[kind])
        _max_values[kind] = found
    return found


_resets: list[Callable[[], None]] = []


def on_reset(func: Callable[[], None]) -> Callable[[], None]:
    """Register ``func`` (a decorator): it forgets a module's state on ``reset()``."""
    _resets.append(func)
    return func


def reset() -> None:
    """Forget every module-level state of the app: the settings read, the custom
    families, the caches of access, label policy, recording and the scrape, and the
    push backends' dispatcher (flushed first)."""
    app_settings.reload()
    _max_values.clear()
    for func in list(_resets):
        func()


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "TAMMA_METRICS":
        reset()


setting_changed.connect(_settings_changed)


# Default-cache backends that are not one store shared by every process of every host,
# by the base class Django ships (so django-prometheus's instrumented subclasses count
# as what they wrap), and what follows for counts kept in them.
_WEAK_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache": "private",
    "django.core.cache.backends.dummy.DummyCache": "private",
    "django.core.cache.backends.filebased.FileBasedCache": "approximate",
    "django.core.cache.backends.db.DatabaseCache": "approximate",
}


def cache_weakness() -> str | None:
    """None when the default cache is shared and counts atomically (Redis, Memcached);
    "private" when each process has its own (locmem, dummy); "approximate" when shared
    but without atomic increments (file, database)."""
    return _weakness_of(settings.CACHES.get("default", {}).get("BACKEND", ""))


@lru_cache(maxsize=8)
def _weakness_of(backend: str) -> str | None:
    try:
        cls = import_string(backend)
    except ImportError:
        return None  # Django reports an unusable cache itself
    for base, weakness in _WEAK_CACHES.items():
        if issubclass(cls, import_string(base)):
            return weakness
    return None

"""Settings of tamma_metrics: one ``TAMMA_METRICS`` dict over ``DEFAULTS``.

Read through ``app_settings``; a few 12-factor values may also come from the
environment. The cache is dropped on ``setting_changed`` so ``override_settings``
works in tests.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

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
    # Push backends: {"statsd": {...}, "otel": {...}} (see tamma_metrics.backends).
    "BACKENDS": {},
    # Events waiting for the backends; past it they are dropped for the backends only.
    "BACKEND_QUEUE_SIZE": 10_000,
}

# Environment variables that override a setting, and how to parse them.
ENV_OVERRIDES: dict[str, str] = {
    "METRICS_ENABLED": "ENABLED",
    "METRICS_PREFIX": "PREFIX",
    "METRICS_AUTH_ENABLED": "AUTH_ENABLED",
    "METRICS_ENVIRONMENT": "ENVIRONMENT",
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


class AppSettings:
    """Lazy view of the settings; attribute access returns the effective value."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown tamma_metrics setting: {name}")
        if name not in self._cache:
            self._cache[name] = self._resolve(name)
        return self._cache[name]

    def _resolve(self, name: str) -> Any:
        user = getattr(settings, "TAMMA_METRICS", {}) or {}
        value = user.get(name, DEFAULTS[name])
        for env_name, setting_name in ENV_OVERRIDES.items():
            if setting_name == name and env_name in os.environ:
                raw = os.environ[env_name]
                value = parse_bool(raw, env_name) if isinstance(DEFAULTS[name], bool) else raw
        return value

    def reload(self) -> None:
        self._cache.clear()


app_settings = AppSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "TAMMA_METRICS":
        app_settings.reload()
        from . import catalogue  # imports this module: import it late

        catalogue.reset()


setting_changed.connect(_reload)

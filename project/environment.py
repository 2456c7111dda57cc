"""The database and the cache of the demo site (and the test suite) from URLs, through
django-prometheus's instrumented engines, so a host gets ``django_db_*`` and
``django_cache_*`` series for what it really uses (docs/usage.md says which)."""

from __future__ import annotations

from typing import Any

import dj_database_url

# Engines django-prometheus wraps (it counts queries, errors and their durations).
_WRAPPED_ENGINES = {"sqlite3", "postgresql", "mysql", "postgis", "spatialite"}


def database_from_url(url: str | None, default: str, **options: Any) -> dict:
    """DATABASE_URL (or ``default``) as Django's DATABASES entry, instrumented."""
    config = dj_database_url.parse(url or default, **options)
    vendor = config["ENGINE"].rpartition(".")[2]
    if config["ENGINE"].startswith("django.db.backends.") and vendor in _WRAPPED_ENGINES:
        config["ENGINE"] = f"django_prometheus.db.backends.{vendor}"
    return config


def cache_from_url(url: str) -> dict:
    """redis://HOST:PORT/DB (shared by every process and host: use it in production), or
    for one process locmem:// (default), db://TABLE or file:///PATH."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        # Django's own Redis client, with hits and misses counted.
        backend = "django_prometheus.cache.backends.redis.NativeRedisCache"
        return {"BACKEND": backend, "LOCATION": url}
    if url.startswith("db://"):
        return {  # django-prometheus has no instrumented database cache
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": url[len("db://") :] or "tamma_cache",
        }
    if url.startswith("file://"):
        return {
            "BACKEND": "django_prometheus.cache.backends.filebased.FileBasedCache",
            "LOCATION": url[len("file://") :],
        }
    if url.startswith("locmem://"):
        return {"BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache"}
    raise ValueError(f"CACHE_URL {url!r}: use redis://, locmem://, db://TABLE or file:///PATH")

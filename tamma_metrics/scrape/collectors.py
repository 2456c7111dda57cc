"""Collectors that compute families at scrape time instead of storing them.

``describe()`` is implemented on each, so registering them never runs a query: a
registry without ``describe()`` would call ``collect()`` at registration, querying
the database during start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping

from django.core.cache import cache
from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily, Metric

from .. import __version__, budget, catalogue
from ..conf import app_settings
from . import queries

logger = logging.getLogger(__name__)


def _gauge(name: str) -> GaugeMetricFamily:
    family = catalogue.get(name)
    return GaugeMetricFamily(family.full_name, family.help, labels=family.labels)


CACHE_KEY = "tamma_metrics:db_gauge:v2:{}"


def _cached(names: list[str], max_age: float) -> dict[str, dict[queries.Labels, float]]:
    """The families' values still in the shared cache and younger than ``max_age``
    seconds; a cache failure is a miss."""
    if not names or max_age <= 0:
        return {}
    keys = {CACHE_KEY.format(name): name for name in names}
    try:
        found = cache.get_many(list(keys))
    except Exception:
        logger.warning("tamma_metrics: cache unavailable; querying the database", exc_info=True)
        return {}
    oldest = time.time() - max_age
    return {keys[key]: entry["values"] for key, entry in found.items() if entry["at"] >= oldest}


def _remember(values: dict[str, dict[queries.Labels, float]]) -> None:
    seconds = app_settings.DATABASE_CACHE_SECONDS
    if not values or not seconds:
        return
    now = time.time()
    entries = {CACHE_KEY.format(name): {"at": now, "values": v} for name, v in values.items()}
    try:
        cache.set_many(entries, seconds)
    except Exception:
        logger.warning("tamma_metrics: cache unavailable; gauges not shared", exc_info=True)


class DatabaseCollector:
    """The database gauges, one GROUP BY query each, plus the collector's own health.

    ``families`` narrows what is collected (None: all), so a caller who may not see a
    family never makes its query run, nor reads it from the cache. Values are shared
    through Django's default cache for ``DATABASE_CACHE_SECONDS``, so several workers,
    hosts and an HA pair of Prometheus servers cost one query per family and period.
    The queries that do run share ``budget_seconds`` (default ``DATABASE_BUDGET_SECONDS``).
    """

    name = "database"

    def __init__(
        self,
        families: Iterable[str] | None = None,
        *,
        budget_seconds: float | None = None,
        scrape_timeout: float | None = None,
        others_up: Mapping[str, float] | None = None,
    ) -> None:
        wanted = set(queries.GAUGES) if families is None else set(families)
        # collector_up of the scrape's other sources (the folder): one family, one TYPE.
        self.others_up = dict(others_up or {})
        self.families = [name for name in queries.GAUGES if name in wanted]
        self.budget_seconds = budget_seconds
        # A shared value is used only while younger than the scraper's timeout (which
        # Prometheus keeps below its interval): a change shows within two scrapes at
        # any interval, while an HA pair and several workers still share one query.
        self.max_age = float(app_settings.DATABASE_CACHE_SECONDS)
        if scrape_timeout is not None:
            self.max_age = min(self.max_age, scrape_timeout)

    def describe(self) -> Iterator[Metric]:
        for name in self.families:
            yield _gauge(name)
        yield _gauge("metrics_collector_up")
        yield _gauge("metrics_collector_duration_seconds")

    def _values(self) -> dict[str, dict[queries.Labels, float]]:
        values = _cached(self.families, self.max_age)
        missing = [name for name in self.families if name not in values]
        if not missing:
            return values
        seconds = self.budget_seconds
        if seconds is None:
            seconds = budget.database_budget()
        computed: dict[str, dict[queries.Labels, float]] = {}
        try:
            with budget.time_limited(seconds) as before_query:
                for name in missing:
                    before_query()
                    computed[name] = queries.GAUGES[name]()
        finally:
            # Families computed before a failure are right: share them anyway.
            _remember(computed)
        return {**values, **computed}

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        gauges = []
        up = 1.0
        try:
            values = self._values()
            for name in self.families:
                gauge = _gauge(name)
                for label_values, value in values[name].items():
                    gauge.add_metric(label_values, value)
                gauges.append(gauge)
        except (DatabaseError, budget.BudgetExhausted) as exc:
            # Down, slow or locked: the in-process families are still served and
            # collector_up says what broke. No traceback: this repeats every scrape.
            logger.warning("tamma_metrics: database gauges left out: %s", exc)
            gauges, up = [], 0.0
        except Exception:
            # A bug must not fail the scrape either, but deserves its traceback.
            logger.exception("tamma_metrics: database collector failed")
            gauges, up = [], 0.0
        yield from gauges
        up_gauge = _gauge("metrics_collector_up")
        up_gauge.add_metric([self.name], up)
        for name, value in self.others_up.items():
            up_gauge.add_metric([name], value)
        yield up_gauge
        duration = _gauge("metrics_collector_duration_seconds")
        duration.add_metric([self.name], time.perf_counter() - start)
        yield duration


class BuildInfoCollector:
    """``build_info{version, environment} 1``: constant, so computed rather than stored."""

    def describe(self) -> Iterator[Metric]:
        yield _gauge("build_info")

    def collect(self) -> Iterator[Metric]:
        gauge = _gauge("build_info")
        gauge.add_metric([__version__, str(app_settings.ENVIRONMENT)], 1.0)
        yield gauge

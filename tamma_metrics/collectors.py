"""Collectors that compute families at scrape time instead of storing them.

``describe()`` is implemented on each, so registering them never runs a query: a
registry without ``describe()`` would call ``collect()`` at registration, querying
the database during start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from . import __version__, catalogue, queries
from .conf import app_settings

logger = logging.getLogger(__name__)


def _gauge(name: str) -> GaugeMetricFamily:
    family = catalogue.get(name)
    return GaugeMetricFamily(family.full_name, family.help, labels=family.labels)


class DatabaseCollector:
    """The database gauges, one GROUP BY query each, plus the collector's own health.

    ``families`` narrows what is collected (None: all), so a caller who may not see a
    family never makes its query run.
    """

    name = "database"

    def __init__(self, families: Iterable[str] | None = None) -> None:
        wanted = set(queries.GAUGES) if families is None else set(families)
        self.families = [name for name in queries.GAUGES if name in wanted]

    def describe(self) -> Iterator[Metric]:
        for name in self.families:
            yield _gauge(name)
        yield _gauge("metrics_collector_up")
        yield _gauge("metrics_collector_duration_seconds")

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        gauges = []
        up = 1.0
        try:
            for name in self.families:
                gauge = _gauge(name)
                for label_values, value in queries.GAUGES[name]().items():
                    gauge.add_metric(label_values, value)
                gauges.append(gauge)
        except Exception:
            # An unreachable or failing database must not fail the scrape: the
            # in-process families are still served and collector_up says what broke.
            logger.exception("tamma_metrics: database collector failed")
            gauges, up = [], 0.0
        yield from gauges
        up_gauge = _gauge("metrics_collector_up")
        up_gauge.add_metric([self.name], up)
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

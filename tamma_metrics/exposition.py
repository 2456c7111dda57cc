"""One scrape: a fresh registry over the stored and computed families, then encoding.

Nothing here knows HTTP: the view hands in the Accept headers and the wanted names
and gets bytes and headers back. In multiprocess mode the stored families come from
the merged folder (every web worker, command and shell that recorded); otherwise from
this process's default registry.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.core.cache import cache
from prometheus_client import REGISTRY, CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import budget, catalogue, instruments, multiprocess, queries
from .access import EVERYTHING, Visibility
from .collectors import BuildInfoCollector, DatabaseCollector

logger = logging.getLogger(__name__)

LAST_SCRAPE_KEY = "tamma_metrics:last_scrape"


class _DefaultRegistry:
    """This process's default registry as one collector of the per-scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class _MergedFolder:
    """The merged multiprocess folder, plus HELP and TYPE of families not yet recorded.

    The folder only knows families some process has written to; listing the rest keeps
    the catalogue discoverable from the first scrape, as in single-process mode. Files
    are read under the folder's shared lock (see ``multiprocess``), broken ones skipped
    and counted in ``metrics_multiprocess_skipped_files``.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        try:
            read = multiprocess.read_folder(self.path)
        except Exception:
            # Without a consistent view, serve no stored sample rather than a false
            # counter reset; the database gauges are still served.
            logger.exception("tamma_metrics: could not read the multiprocess folder")
            read = None
        seen = set()
        for metric in read.metrics if read else ():
            seen.add(metric.name)
            yield metric
        for family in catalogue.families():
            if instruments.is_instrumented(family) and family.metric_name not in seen:
                yield Metric(family.metric_name, family.help, family.kind.value)
        yield from _folder_gauges(read)


def _folder_gauges(read: multiprocess.FolderRead | None) -> Iterator[Metric]:
    """The folder's self-metrics; without samples when there is no folder reading."""
    values = {"metrics_multiprocess_files": read.files if read else 0}
    values["metrics_multiprocess_skipped_files"] = read.skipped if read else 0
    for name, value in values.items():
        family = catalogue.get(name)
        gauge = GaugeMetricFamily(family.full_name, family.help, labels=())
        if read is not None:
            gauge.add_metric([], value)
        yield gauge


class _NoFolder:
    """Single-process mode: the folder families exist (HELP, TYPE) but have no sample."""

    def collect(self) -> Iterator[Metric]:
        return _folder_gauges(None)


class _Visible:
    """Only the families a caller may see: no samples, HELP or TYPE of the others."""

    def __init__(self, source: Collector, allows: Callable[[str], bool]) -> None:
        self.source, self.allows = source, allows
        if hasattr(source, "describe"):
            # Keeps name[] able to skip a collector (and its queries) entirely.
            self.describe = lambda: (m for m in source.describe() if allows(m.name))

    def collect(self) -> Iterator[Metric]:
        return (metric for metric in self.source.collect() if self.allows(metric.name))


def build_registry(
    visibility: Visibility = EVERYTHING, *, scrape_timeout: float | None = None
) -> CollectorRegistry:
    """A registry for one scrape: stored families + database gauges + build info.

    ``scrape_timeout`` is how long the scraper waits (seconds); the database gauges
    get a share of it, capped by ``DATABASE_BUDGET_SECONDS``.
    """
    instruments.get_all()  # families with no sample yet still get HELP and TYPE lines
    path = instruments.multiprocess_dir()
    if path:
        # The merged folder, and the process that answers the scrape (other workers'
        # process metrics are not visible from here).
        sources = [
            _MergedFolder(path),
            ProcessCollector(registry=None),
            PlatformCollector(registry=None),
        ]
    else:
        sources = [_DefaultRegistry(), _NoFolder()]
    # A family the caller may not see is never queried.
    gauges = [name for name in queries.GAUGES if visibility.allows_family(name)]
    database = DatabaseCollector(
        gauges,
        budget_seconds=budget.database_budget(scrape_timeout),
        scrape_timeout=scrape_timeout,
    )
    sources += [database, BuildInfoCollector()]
    # Collectors without describe() are always collected and filtered by name;
    # those with describe() are skipped when none of their names is wanted.
    registry = CollectorRegistry(support_collectors_without_names=True)
    for source in sources:
        registry.register(
            source if visibility.families is None else _Visible(source, visibility.allows)
        )
    return registry


@dataclass
class Exposition:
    body: bytes
    content_type: str
    content_encoding: str | None


def render(
    *,
    accept: str = "",
    accept_encoding: str = "",
    names: Iterable[str] = (),
    visibility: Visibility = EVERYTHING,
    scrape_timeout: float | None = None,
) -> Exposition:
    """Encode one scrape in the format ``accept`` asks for, gzipped when accepted."""
    start = time.perf_counter()
    registry = build_registry(visibility, scrape_timeout=scrape_timeout)
    names = [name for name in names if name]
    if names:
        registry = registry.restricted_registry(names)
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry)
    encoding = None
    if gzip_accepted(accept_encoding):
        body, encoding = gzip.compress(body), "gzip"
    _remember_scrape(time.perf_counter() - start)
    return Exposition(body, content_type, encoding)


def _remember_scrape(duration: float) -> None:
    # Shared through the cache so /metrics/health reports the last scrape of any worker.
    cache.set(LAST_SCRAPE_KEY, {"time": time.time(), "duration_seconds": duration}, None)


def last_scrape() -> dict | None:
    """Time and duration of the last scrape served, if the cache still has it."""
    return cache.get(LAST_SCRAPE_KEY)

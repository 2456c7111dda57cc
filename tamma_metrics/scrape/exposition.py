"""One scrape: the stored and computed families, encoded for the caller.

Nothing here knows HTTP: the view hands in the Accept headers and the wanted names
and gets bytes and headers back. In multiprocess mode the stored families come from
the merged folder (every web worker, command and shell that recorded), read by this
process's incremental reader (``folder``) and encoded from its cached lines; otherwise
from this process's default registry. The few families computed per scrape (database
gauges, process, build info) go through the same encoder (``encoder``), so the bytes
are what prometheus_client's ``generate_latest`` would write for the same families.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.core.cache import cache
from prometheus_client import REGISTRY, CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .. import budget, catalogue, instruments
from ..catalogue import EVERYTHING, Visibility
from ..conf import on_reset
from . import conformance, encoder, folder, mmap_guard, queries
from .collectors import BuildInfoCollector, DatabaseCollector

__all__ = [
    "Exposition",
    "build_registry",
    "last_scrape",
    "merged_folder",
    "render",
]

logger = logging.getLogger(__name__)

# What the scrape keeps between scrapes: the folder's index, interned keys, encoded
# headers and names (the names change with the settings' PREFIX).
for _forget in (folder.reset, folder.clear_caches, encoder.clear_caches):
    on_reset(_forget)

LAST_SCRAPE_KEY = "tamma_metrics:last_scrape"


class _DefaultRegistry:
    """This process's default registry as one collector of the per-scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def merged_folder(path: str) -> folder.FolderRead:
    """The folder merged into prometheus_client Metrics: by this process's reader (what
    it has indexed is not read again), or by prometheus_client's own collector should
    the installed release merge differently (``conformance``)."""
    if conformance.verified():
        snapshot = folder.reader(path).read()
        metrics = [metric.as_metric() for metric in snapshot.metrics]
        return folder.FolderRead(metrics, snapshot.files, snapshot.skipped)
    files = glob.glob(os.path.join(glob.escape(path), "*.db"))
    return folder.FolderRead(list(MultiProcessCollector(None, path=path).collect()), len(files), 0)


class _MergedFolder:
    """The merged multiprocess folder, plus HELP and TYPE of families not yet recorded.

    A library-style collector over the same reader, for ``push_metrics`` and anything
    else that wants a ``CollectorRegistry``; scrapes use ``_folder_chunks`` instead.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        try:
            read = merged_folder(self.path)
        except Exception:
            logger.exception("tamma_metrics: could not read the multiprocess folder")
            read = None
        seen = set()
        for metric in read.metrics if read else ():
            seen.add(metric.name)
            yield metric
        yield from _unrecorded(seen)
        yield from _folder_gauges(read)


def _unrecorded(seen: set[str]) -> Iterator[Metric]:
    """HELP and TYPE of the catalogue's stored families no process has written yet.

    The folder only knows families some process has written to; listing the rest keeps
    the catalogue discoverable from the first scrape, as in single-process mode.
    """
    for family in catalogue.families():
        if family.stored and family.metric_name not in seen:
            yield Metric(family.metric_name, family.help, family.kind.value)


def _folder_gauges(read: folder.FolderRead | folder.Snapshot | None) -> Iterator[Metric]:
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


def _computed(
    visibility: Visibility,
    scrape_timeout: float | None,
    deadline: budget.Deadline | None = None,
    up: dict[str, float] | None = None,
) -> list[Collector]:
    """The collectors besides the folder: this process's, the database's, build info.
    ``up``: ``collector_up`` of what was collected before (the folder), which the
    database collector serves in the same family."""
    if instruments.multiprocess_dir():
        # The process that answers the scrape (other workers' process metrics are not
        # visible from here).
        sources = [ProcessCollector(registry=None), PlatformCollector(registry=None)]
    else:
        sources = [_DefaultRegistry(), _NoFolder()]
    # A family the caller may not see is never queried.
    gauges = [name for name in queries.GAUGES if visibility.allows_family(name)]
    seconds = deadline.remaining() if deadline else budget.database_budget(scrape_timeout)
    database = DatabaseCollector(
        gauges, budget_seconds=seconds, scrape_timeout=scrape_timeout, others_up=up
    )
    return [*sources, database, BuildInfoCollector()]


def build_registry(
    visibility: Visibility = EVERYTHING, *, scrape_timeout: float | None = None
) -> CollectorRegistry:
    """A registry of what a scrape serves, for code that wants a ``CollectorRegistry``
    (``push_metrics``). Scrapes themselves use ``render``, which keeps encoded lines.

    ``scrape_timeout`` is how long the scraper waits (seconds); the database gauges
    get a share of it, capped by ``DATABASE_BUDGET_SECONDS``.
    """
    instruments.get_all()  # families with no sample yet still get HELP and TYPE lines
    path = instruments.multiprocess_dir()
    sources: list[Collector] = [_MergedFolder(path)] if path else []
    up = {FOLDER: 0.0 if _folder_problem(path) else 1.0} if path else None
    sources += _computed(visibility, scrape_timeout, up=up)
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
    deadline: budget.Deadline | None = None,
) -> Exposition:
    """Encode one scrape in the format ``accept`` asks for, gzipped when accepted.

    ``deadline``: when the scrape's database time ends, if the caller already spent part
    of it (authentication); otherwise the gauges get ``database_budget(scrape_timeout)``.
    """
    start = time.perf_counter()
    fmt, content_type = encoder.negotiate(accept)
    wanted = frozenset(name for name in names if name)
    allows = None if visibility.families is None else visibility.allows
    parts: list[bytes] = []
    instruments.get_all()  # families with no sample yet still get HELP and TYPE lines
    path = instruments.multiprocess_dir()
    up = None
    if path:
        chunks, read = _folder_chunks(path, fmt, allows, wanted)
        parts += chunks
        up = {FOLDER: 1.0 if read and not _folder_problem(path) else 0.0}
    for source in _computed(visibility, scrape_timeout, deadline, up):
        parts.append(encoder.encode_metrics(fmt, _collect(source, allows, wanted)))
    if fmt.openmetrics:
        parts.append(encoder.EOF)
    body = b"".join(parts)
    encoding = None
    if encoder.accepts_gzip(accept_encoding):
        body, encoding = encoder.gzip(body), "gzip"
    _remember_scrape(time.perf_counter() - start)
    return Exposition(body, content_type, encoding)


def _folder_chunks(
    path: str, fmt: encoder.Format, allows: Callable[[str], bool] | None, wanted: frozenset[str]
) -> tuple[list[bytes], bool]:
    """The folder's families, from the cached chunks of this process's reader (or from
    prometheus_client's own collector, should the installed version merge differently),
    and whether the folder could be read."""
    try:
        snapshot: folder.Snapshot | folder.FolderRead | None
        if conformance.verified():
            parts, seen, snapshot = folder.reader(path).chunks(fmt, allows, wanted)
        else:
            snapshot = merged_folder(path)
            parts = [encoder.encode_metrics(fmt, _restrict(snapshot.metrics, allows, wanted))]
            seen = {metric.name for metric in snapshot.metrics}
    except Exception:
        # Without a consistent view, serve no stored sample rather than a false
        # counter reset; the database gauges are still served.
        logger.exception("tamma_metrics: could not read the multiprocess folder")
        parts, seen, snapshot = [], set(), None
    extra = [*_unrecorded(seen), *_folder_gauges(snapshot)]
    parts.append(encoder.encode_metrics(fmt, _restrict(extra, allows, wanted)))
    return parts, snapshot is not None


FOLDER = "folder"  # collector_up{collector="folder"}: the multiprocess folder
_told_problem: str | None = None


def _folder_problem(path: str) -> str | None:
    """Why the folder cannot take what processes record (full, read-only, ...), logged
    when it changes rather than at every scrape; None when it can."""
    global _told_problem
    problem = mmap_guard.folder_problem(path)
    if problem == "detached" and mmap_guard.reattach():
        problem = mmap_guard.folder_problem(path)  # what it recorded in memory is served
    if problem != _told_problem:
        _told_problem = problem
        if problem:
            logger.error(
                "tamma_metrics: the multiprocess folder %s cannot take new metrics (%s): "
                "events may be lost; scrapes report collector_up{collector=%r} 0",
                path,
                problem,
                FOLDER,
            )
        else:
            logger.warning("tamma_metrics: the multiprocess folder %s takes metrics again", path)
    return problem


def _restrict(
    metrics: Iterable[Metric], allows: Callable[[str], bool] | None, wanted: frozenset[str]
) -> Iterator[Metric]:
    """The metrics the caller may see, narrowed to ``name[]`` as the library narrows."""
    for metric in metrics:
        if allows is not None and not allows(metric.name):
            continue
        if wanted:
            metric = metric._restricted_metric(wanted)
            if metric is None:
                continue
        yield metric


def _described(source: Collector, allows: Callable[[str], bool] | None) -> set[str] | None:
    describe = getattr(source, "describe", None)
    if describe is None:
        return None
    names = set()
    for metric in describe():
        if allows is None or allows(metric.name):
            names.add(metric.name)
            names.update(metric.name + suffix for suffix in _TYPE_SUFFIXES.get(metric.type, ()))
    return names


# The sample names a family of each type may have, as CollectorRegistry derives them.
_TYPE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}


def _collect(
    source: Collector, allows: Callable[[str], bool] | None, wanted: frozenset[str]
) -> Iterator[Metric]:
    """Collect ``source`` unless ``name[]`` asks for none of its families: a collector
    with ``describe()`` (the database) is then not run at all, as in a restricted
    registry."""
    if wanted:
        described = _described(source, allows)
        if described is not None and not described & wanted:
            return iter(())
    return _restrict(source.collect(), allows, wanted)


def _remember_scrape(duration: float) -> None:
    # Shared through the cache so /metrics/health reports the last scrape of any worker.
    cache.set(LAST_SCRAPE_KEY, {"time": time.time(), "duration_seconds": duration}, None)


def last_scrape() -> dict[str, float] | None:
    """Time and duration of the last scrape served, if the cache still has it."""
    found: dict[str, float] | None = cache.get(LAST_SCRAPE_KEY)
    return found

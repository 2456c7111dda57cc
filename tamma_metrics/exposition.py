"""One scrape: a fresh registry over the stored and computed families, then encoding.

Nothing here knows HTTP: the view hands in the Accept headers and the wanted names
and gets bytes and headers back. In multiprocess mode the stored families come from
the merged folder (every web worker, command and shell that recorded); otherwise from
this process's default registry.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.cache import cache
from prometheus_client import REGISTRY, CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from . import instruments
from .collectors import BuildInfoCollector, DatabaseCollector

LAST_SCRAPE_KEY = "tamma_metrics:last_scrape"


class _DefaultRegistry:
    """This process's default registry as one collector of the per-scrape registry."""

    def collect(self) -> Iterable:
        return REGISTRY.collect()


def build_registry(database_families: Iterable[str] | None = None) -> CollectorRegistry:
    """A registry for one scrape: stored families + database gauges + build info."""
    instruments.get_all()  # families with no sample yet still get HELP and TYPE lines
    # Collectors without describe() (the merged folder) are always collected and
    # filtered by name; those with describe() are skipped when no name is wanted.
    registry = CollectorRegistry(support_collectors_without_names=True)
    path = instruments.multiprocess_dir()
    if path:
        MultiProcessCollector(registry, path=path)
        # The process that answers the scrape; other workers' are not visible here.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    else:
        registry.register(_DefaultRegistry())
    registry.register(DatabaseCollector(database_families))
    registry.register(BuildInfoCollector())
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
    registry: Collector | None = None,
) -> Exposition:
    """Encode one scrape in the format ``accept`` asks for, gzipped when accepted."""
    start = time.perf_counter()
    registry = registry or build_registry()
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

"""prometheus_client objects built from the catalogue, once per process.

prometheus_client picks single- or multi-process storage when it is imported, from
``PROMETHEUS_MULTIPROC_DIR``; the same code serves both. Families computed at scrape
time (``Family.stored`` false) have no instrument here.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

from . import catalogue
from .catalogue import Kind

__all__ = [
    "get",
    "get_all",
    "multiprocess_dir",
]

_lock = threading.Lock()
_instruments: dict[str, Any] | None = None


def multiprocess_dir() -> str | None:
    """The multiprocess folder when prometheus_client runs in multiprocess mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _build(family: catalogue.Family) -> Any:
    common = {
        "name": family.full_name,
        "documentation": family.help,
        "labelnames": family.labels,
        "registry": REGISTRY,
    }
    if family.kind is Kind.COUNTER:
        return Counter(**common)
    if family.kind is Kind.HISTOGRAM:
        return Histogram(buckets=family.buckets, **common)
    if family.kind is Kind.GAUGE:
        return Gauge(multiprocess_mode=family.multiprocess_mode or "livesum", **common)
    raise ValueError(f"no instrument for {family.kind} family {family.name}")


def get_all() -> dict[str, Any]:
    """Return {family name: instrument}, building them on first use."""
    global _instruments
    if _instruments is None:
        with _lock:
            if _instruments is None:
                # Counters' _created series double the series count for no use in PromQL.
                disable_created_metrics()
                _instruments = {f.name: _build(f) for f in catalogue.families() if f.stored}
    return _instruments


def get(name: str) -> Any:
    """Return the instrument of the family ``name``."""
    built = get_all()
    if name not in built:
        # A custom family declared after the others were built (settings changed).
        with _lock:
            if name not in built:
                built[name] = _build(catalogue.get(name))
    return built[name]

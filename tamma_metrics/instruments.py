"""prometheus_client objects built from the catalogue, once per process.

prometheus_client picks single- or multi-process storage when it is imported, from
``PROMETHEUS_MULTIPROC_DIR``; the same code serves both. Families computed at scrape
time (``Family.stored`` false) have no instrument here.

Building them also starts the self-metric counters at 0 for their known label values
(``zero_series``), and the first instrument a process records through says, once, when
no scrape can read what it records (``unscraped``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

from . import catalogue
from .catalogue import Kind, Source
from .conf import app_settings, worker_processes

__all__ = [
    "READ_COMMANDS",
    "get",
    "get_all",
    "management_command",
    "multiprocess_dir",
    "unscraped",
    "zero_series",
]

logger = logging.getLogger("tamma_metrics")

_lock = threading.Lock()
_instruments: dict[str, Any] | None = None


def multiprocess_dir() -> str | None:
    """The multiprocess folder when prometheus_client runs in multiprocess mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _build(family: catalogue.Family) -> Any:
    common: dict[str, Any] = {
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


def zero_series() -> Iterator[tuple[str, tuple[str, ...]]]:
    """(family, label values) of the self-metric counters that start at 0, so an alert
    on them needs no ``or vector(0)`` and ``increase()`` sees their first event: every
    known value of a closed label set, and one series per recorded family of the
    catalogue (or per family and label) for the counters labelled by family
    (docs/metrics.md)."""
    from .models import WebhookSecret  # the apps are ready once anything records

    for stage in catalogue.ERROR_STAGES:
        yield "metrics_errors_total", (stage,)
    for platform, _ in WebhookSecret.PLATFORMS:
        for outcome in catalogue.WEBHOOK_OUTCOMES:
            yield "metrics_webhook_deliveries_total", (platform, outcome)
    for family in catalogue.families():
        if not family.stored or family.source is Source.SELF:
            continue  # not recorded through the label policy
        yield "metrics_label_overflow_total", (family.name,)
        for label in family.labels:
            yield "metrics_label_folds_total", (family.name, label)
            if not _closed(family.name, label):  # only free-form values are redacted
                yield "metrics_label_redactions_total", (family.name, label)


def _closed(family: str, label: str) -> bool:
    """A closed label by the shipped policies (labels.DEFAULT_POLICIES)."""
    spec = catalogue.FAMILY_VOCABULARIES.get((family, label))
    return isinstance(spec, tuple) or (spec is None and label in catalogue.VOCABULARIES)


def _start_at_zero(built: dict[str, Any]) -> None:
    """Create the children of ``zero_series`` (in multiprocess mode, their entries in this
    process's file, which every scrape merges); a failure here never stops the build."""
    try:
        for name, values in zero_series():
            built[name].labels(*values)
    except Exception:
        logger.exception("tamma_metrics: the self-metrics could not be started at 0")


def get_all() -> dict[str, Any]:
    """Return {family name: instrument}, building them on first use."""
    global _instruments
    if _instruments is None:
        with _lock:
            if _instruments is None:
                # Counters' _created series double the series count for no use in PromQL.
                disable_created_metrics()
                built = {f.name: _build(f) for f in catalogue.families() if f.stored}
                _start_at_zero(built)
                _instruments = built
    return _instruments


def get(name: str) -> Any:
    """Return the instrument of the family ``name`` (what recording writes through: the
    first call in a process also says if no scrape will read it, ``unscraped``)."""
    if not _unscraped_told:
        _tell_unscraped()
    built = get_all()
    if name not in built:
        # A custom family declared after the others were built (settings changed).
        with _lock:
            if name not in built:
                built[name] = _build(catalogue.get(name))
    return built[name]


# -- events no scrape can read -------------------------------------------------------
#
# A process tells, once, on the first event it records, when what it records is in a
# place no scrape of the site reads. "A management command" is what manage.py or
# django-admin runs (sys.argv); "the site runs several processes" is what
# WORKER_PROCESSES, else WEB_CONCURRENCY, says (``conf.worker_processes``).

# Commands whose own registry is read: runserver and testserver serve the site (their
# scrapes read it), push_metrics pushes it.
READ_COMMANDS = frozenset({"runserver", "testserver", "push_metrics"})
_PROGRAMS = frozenset({"manage.py", "django-admin", "django-admin.py"})

_unscraped_told = False


def management_command(argv: list[str] | None = None) -> str | None:
    """The management command this process runs (``manage.py shell`` -> ``shell``), or
    None when it is not manage.py, django-admin or ``python -m django``."""
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1].startswith("-"):
        return None
    program = argv[0]
    if os.path.basename(program) in _PROGRAMS or program.endswith(
        os.path.join("django", "__main__.py")
    ):
        return argv[1]
    return None


def _folder_setting() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def unscraped() -> str | None:
    """Why no scrape will read the events this process records, and where they go; None
    when a scrape does (a multiprocess folder is set, or one process serves the site)."""
    raw = _folder_setting()
    if raw:
        return None  # the folder every scrape merges (E007 and E008 report a broken one)
    if raw is None:
        where = "this process's own registry (PROMETHEUS_MULTIPROC_DIR is not set)"
    else:
        # prometheus_client joins "" with its file names: the working directory.
        where = (
            f"files in the current directory ({os.getcwd()}): PROMETHEUS_MULTIPROC_DIR is "
            "set but empty"
        )
    pid = os.getpid()
    command = management_command()
    if command is not None:
        if command in READ_COMMANDS:
            return None
        message = (
            f"tamma_metrics: events recorded by this process (manage.py {command}, pid {pid}) "
            f"go to {where}; no scrape of the site reads them, and unless it pushes them "
            '(call_command("push_metrics", ...)) they are lost when it exits. Run it with '
            "the site's PROMETHEUS_MULTIPROC_DIR to have them scraped."
        )
    else:
        processes = worker_processes()
        if processes < 2:
            return None
        said_by = "WORKER_PROCESSES" if app_settings.WORKER_PROCESSES else "WEB_CONCURRENCY"
        message = (
            f"tamma_metrics: the site runs {processes} processes ({said_by}={processes}) and "
            f"events recorded by this process (pid {pid}) go to {where}; a scrape shows "
            "only the events of the process that answers it. Set PROMETHEUS_MULTIPROC_DIR "
            "to a folder its processes share (docs/serving.md)."
        )
    backends = app_settings.BACKENDS
    if backends:
        message += f" They are also sent to the push backends: {', '.join(sorted(backends))}."
    return message


def _tell_unscraped() -> None:
    global _unscraped_told
    _unscraped_told = True
    try:
        message = unscraped()
    except Exception:  # pragma: no cover - telling must never break recording
        logger.exception("tamma_metrics: could not tell where this process's events go")
        return
    if message:
        logger.warning(message)


def _forget_told_after_fork() -> None:
    # A worker forked from a master that recorded tells for itself.
    global _unscraped_told
    _unscraped_told = False


os.register_at_fork(after_in_child=_forget_told_after_fork)

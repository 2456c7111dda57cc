"""The metrics layer counting its own failures: recording, receivers, backends and the
scrape all count through here, and nothing in here ever raises."""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable
from typing import ParamSpec

from . import instruments

__all__ = [
    "DISK_ERRNOS",
    "count_backend_error",
    "count_disk_error",
    "count_error",
    "count_label_change",
    "count_webhook",
    "start_backend_errors",
    "swallowed",
]

logger = logging.getLogger("tamma_metrics")

P = ParamSpec("P")

# What a multiprocess file that cannot be created or grown raises (scrape.mmap_guard):
# the folder's filesystem is full, over quota or read-only.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_disk_told = False


def count_error(stage: str) -> None:
    """Count a swallowed failure of the metrics code in
    ``metrics_errors_total{stage}``."""
    try:
        instruments.get("metrics_errors_total").labels(stage).inc()
    except Exception as exc:  # pragma: no cover - the last line of defence must not raise
        if not _is_disk_error(exc):  # a full folder is logged once, by count_disk_error
            logger.exception("tamma_metrics could not count its own error")


def _is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def count_disk_error(exc: BaseException) -> bool:
    """If ``exc`` says the multiprocess folder is full or read-only, count it under
    ``metrics_errors_total{stage="disk"}``, log it once per process (an event per request
    would flood the log) and return True; otherwise False."""
    global _disk_told
    if not _is_disk_error(exc):
        return False
    if not _disk_told:
        _disk_told = True
        logger.error(
            "tamma_metrics: an event could not be recorded: the multiprocess folder is "
            "full or read-only (%s). Such events are counted in "
            'metrics_errors_total{stage="disk"}; this is logged once per process.',
            exc,
        )
    count_error("disk")
    return True


def count_backend_error(backend: str) -> None:
    """Count an event a push backend could not take in
    ``metrics_backend_errors_total{backend}``."""
    try:
        instruments.get("metrics_backend_errors_total").labels(backend).inc()
    except Exception:  # pragma: no cover
        logger.exception("tamma_metrics could not count a backend error")


def start_backend_errors(*backends: str) -> None:
    """Start ``metrics_backend_errors_total{backend}`` at 0 for these backends (a
    dispatcher starting, a push), so an alert on it needs no ``or vector(0)``."""
    try:
        counter = instruments.get("metrics_backend_errors_total")
        for backend in backends:
            counter.labels(backend)
    except Exception:  # pragma: no cover
        logger.exception("tamma_metrics could not start the backend errors at 0")


def count_label_change(family: str, label: str, *, redacted: bool) -> None:
    """Count a label value the policy recorded as something else (folded, or redacted)
    outside ``record`` (the state API judges values before it stores them)."""
    name = "metrics_label_redactions_total" if redacted else "metrics_label_folds_total"
    try:
        instruments.get(name).labels(family, label).inc()
    except Exception:  # pragma: no cover
        logger.exception("tamma_metrics could not count a label change")


def count_webhook(platform: str, outcome: str) -> None:
    """Count a webhook delivery's outcome (catalogue.WEBHOOK_OUTCOMES)."""
    try:
        instruments.get("metrics_webhook_deliveries_total").labels(platform, outcome).inc()
    except Exception:  # pragma: no cover
        logger.exception("tamma_metrics could not count a webhook delivery")


def swallowed(stage: str, what: str) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Decorate a function whose failure must never reach its caller (a save, a
    request): the exception is logged as ``what failed`` and counted under ``stage``."""

    def decorate(func: Callable[P, None]) -> Callable[P, None]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                func(*args, **kwargs)
            except Exception as exc:
                if count_disk_error(exc):
                    return
                logging.getLogger(func.__module__).exception(
                    "tamma_metrics: %s %s failed", what, func.__name__
                )
                count_error(stage)

        return wrapper

    return decorate

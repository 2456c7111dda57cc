"""The metrics layer counting its own failures: recording, receivers, backends and the
scrape all count through here, and nothing in here ever raises."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec

from . import instruments

__all__ = [
    "count_backend_error",
    "count_error",
    "count_label_change",
    "count_webhook",
    "start_backend_errors",
    "swallowed",
]

logger = logging.getLogger("tamma_metrics")

P = ParamSpec("P")


def count_error(stage: str) -> None:
    """Count a swallowed failure of the metrics code in
    ``metrics_errors_total{stage}``."""
    try:
        instruments.get("metrics_errors_total").labels(stage).inc()
    except Exception:  # pragma: no cover - the last line of defence must not raise
        logger.exception("tamma_metrics could not count its own error")


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
    """Count a webhook delivery's outcome (applied, duplicate, ignored, rejected)."""
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
            except Exception:
                logging.getLogger(func.__module__).exception(
                    "tamma_metrics: %s %s failed", what, func.__name__
                )
                count_error(stage)

        return wrapper

    return decorate

"""django-prometheus's request middleware without its latency histograms.

Request latency is recorded once, by ``tamma_metrics.middleware.ResponseTimeMiddleware``
as ``tamma_api_response_duration_seconds`` (route name, method, status code and caller
type, under the label policy); django-prometheus's two latency histograms would time
the same requests again, by view only. Its request and response counters stay.

A full or read-only multiprocess folder never fails a request here either: a counter
that cannot get its place in the folder is counted as lost (``metrics_errors_total
{stage="disk"}``, as the app's own recording does) and the request goes on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django_prometheus import middleware

from tamma_metrics import selfmetrics

# Timed by tamma_api_response_duration_seconds instead.
TIMED_ELSEWHERE = frozenset(
    {
        "django_http_requests_latency_including_middlewares_seconds",
        "django_http_requests_latency_seconds_by_view_method",
    }
)


class _NotRecorded:
    """Stands in for a histogram that is not registered: observes nothing."""

    def labels(self, *args: Any, **kwargs: Any) -> _NotRecorded:
        return self

    def observe(self, amount: float, *args: Any, **kwargs: Any) -> None:
        pass


class Metrics(middleware.Metrics):
    _instance = None  # its own, not the base class's (that one registers the histograms)

    def register_metric(self, metric_cls, name, documentation, labelnames=(), **kwargs):  # type: ignore[no-untyped-def]
        if name in TIMED_ELSEWHERE:
            return _NotRecorded()
        return super().register_metric(metric_cls, name, documentation, labelnames, **kwargs)


def _disk_tolerant(method: Callable[..., Any], *, passes_response: bool) -> Callable[..., Any]:
    """``method``, answering as if it had recorded when the folder cannot take a write."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, request, *args, **kwargs)
        except OSError as exc:
            if not selfmetrics.count_disk_error(exc):
                raise
            return args[-1] if passes_response else None

    return wrapper


def _tolerant(cls: type) -> type:
    for name in ("process_request", "process_view", "process_exception"):
        if hasattr(cls, name):
            setattr(cls, name, _disk_tolerant(getattr(cls, name), passes_response=False))
    for name in ("process_response", "process_template_response"):
        if hasattr(cls, name):
            setattr(cls, name, _disk_tolerant(getattr(cls, name), passes_response=True))
    return cls


@_tolerant
class PrometheusBeforeMiddleware(middleware.PrometheusBeforeMiddleware):
    metrics_cls = Metrics


@_tolerant
class PrometheusAfterMiddleware(middleware.PrometheusAfterMiddleware):
    metrics_cls = Metrics

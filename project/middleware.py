"""django-prometheus's request middleware without its latency histograms.

Request latency is recorded once, by ``tamma_metrics.middleware.ResponseTimeMiddleware``
as ``tamma_api_response_duration_seconds`` (route name, method, status code and caller
type, under the label policy); django-prometheus's two latency histograms would time
the same requests again, by view only. Its request and response counters stay.
"""

from __future__ import annotations

from typing import Any

from django_prometheus import middleware

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


class PrometheusBeforeMiddleware(middleware.PrometheusBeforeMiddleware):
    metrics_cls = Metrics


class PrometheusAfterMiddleware(middleware.PrometheusAfterMiddleware):
    metrics_cls = Metrics

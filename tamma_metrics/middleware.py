"""Middleware: response times by route name, and the metrics-only port."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.urls import Resolver404, resolve

from . import record
from .conf import app_settings, parse_port

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _user_type(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return "anonymous"
    return "staff" if user.is_staff else "user"


class ResponseTimeMiddleware:
    """Times each response; the endpoint label is the URL route name, never the path.

    Unrouted requests (404s from scanners) share one ``unmatched`` series, so a
    crawler cannot grow the series count.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        record.api_response(
            endpoint=(match.view_name if match and match.url_name else "unmatched"),
            method=request.method if request.method in KNOWN_METHODS else "other",
            status_code=response.status_code,
            user_type=_user_type(request),
            duration_seconds=time.perf_counter() - start,
        )
        return response


# Views a request on the metrics port may reach.
METRICS_PORT_VIEWS = frozenset({"tamma_metrics:metrics", "tamma_metrics:health"})


class MetricsPortMiddleware:
    """On ``METRICS_PORT`` only /metrics and /metrics/health answer; anything else is 404.

    The port is the one the request arrived on (``SERVER_PORT``, which gunicorn takes
    from the listening socket), never the Host or X-Forwarded-Port headers a client
    controls. The 404 is plain text so DEBUG's page listing every URL never shows
    there. Put it first, before sessions and CSRF, so nothing else runs for such
    requests; authentication and permissions on the allowed views are unchanged.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        port = _metrics_port()
        if port is not None and request.META.get("SERVER_PORT") == str(port):
            try:
                view = resolve(request.path_info, getattr(request, "urlconf", None)).view_name
            except Resolver404:
                view = ""
            if view not in METRICS_PORT_VIEWS:
                return HttpResponseNotFound(
                    "Not found: this port serves /metrics only.\n",
                    content_type="text/plain; charset=utf-8",
                )
        return self.get_response(request)


def _metrics_port() -> int | None:
    try:
        return parse_port(app_settings.METRICS_PORT)
    except ValueError:
        return None  # system check tamma_metrics.E012 reports it

"""Middleware: response times by route name, the metrics-only port, and 503 (not 500)
when the database fails."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.urls import Resolver404, resolve

from . import catalogue, record
from .conf import app_settings, parse_port

logger = logging.getLogger(__name__)

# The HTTP methods the ``method`` label names; any other is recorded as ``other``.
KNOWN_METHODS = frozenset(m.upper() for m in catalogue.VOCABULARIES["method"]) - {"OTHER"}


def _user_type(request: HttpRequest) -> str:
    """What authentication said of the caller (a token is ``service``), else the
    session's user: anonymous, user or staff."""
    known = getattr(request, "tamma_user_type", None)
    if known is not None:
        return str(known)
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


class DatabaseUnavailableMiddleware:
    """Any view whose database fails (down, locked past its timeout) answers 503 with
    Retry-After instead of a 500: the admin's login, a page of the site. /metrics and the
    API answer 503 on their own, within the scrape's budget."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DatabaseError):
            return None
        logger.warning(
            "tamma_metrics: %s failed, database unavailable: %s", request.path, exception
        )
        response = HttpResponse(
            "The database is unavailable; try again shortly.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = "5"
        return response


def _metrics_port() -> int | None:
    try:
        return parse_port(app_settings.METRICS_PORT)
    except ValueError:
        return None  # system check tamma_metrics.E012 reports it

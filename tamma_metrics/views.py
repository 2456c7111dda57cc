"""HTTP views: /metrics and /metrics/health. Small on purpose: the work is elsewhere."""

from __future__ import annotations

import time
from collections import Counter

from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from . import __version__, catalogue, exposition, instruments
from .conf import app_settings


def _no_store(response: HttpResponse) -> HttpResponse:
    # Metrics are live figures: never serve them from a cache.
    response["Cache-Control"] = "no-store"
    response["Vary"] = "Accept, Accept-Encoding, Authorization, Cookie"
    return response


@require_safe  # GET and HEAD only
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the families in Prometheus text or OpenMetrics, by ``Accept``."""
    if not app_settings.ENABLED:
        raise Http404("metrics are disabled")
    result = exposition.render(
        accept=request.headers.get("Accept", ""),
        accept_encoding=request.headers.get("Accept-Encoding", ""),
        names=request.GET.getlist("name[]"),
    )
    response = HttpResponse(result.body, content_type=result.content_type)
    if result.content_encoding:
        response["Content-Encoding"] = result.content_encoding
    return _no_store(response)


def _database_reachable() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers; details for signed-in callers only."""
    start = time.perf_counter()
    reachable = _database_reachable()
    body: dict = {"status": "ok" if reachable else "degraded", "database": {"reachable": reachable}}
    if request.user.is_authenticated:
        body.update(
            {
                "version": __version__,
                "enabled": bool(app_settings.ENABLED),
                "multiprocess": instruments.multiprocess_dir() is not None,
                "families": dict(Counter(f.kind.value for f in catalogue.FAMILIES)),
                "last_scrape": exposition.last_scrape(),
                "check_duration_seconds": time.perf_counter() - start,
            }
        )
    return _no_store(JsonResponse(body, status=200 if reachable else 503))

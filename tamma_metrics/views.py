"""HTTP views: /metrics and /metrics/health. Small on purpose: the work is elsewhere."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TypeVar

from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from . import __version__, access, budget, catalogue, instruments
from .conf import app_settings
from .scrape import exposition


def scrape_timeout(request: HttpRequest) -> float | None:
    """The seconds of the ``X-Prometheus-Scrape-Timeout-Seconds`` header, if usable."""
    raw = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


_Response = TypeVar("_Response", bound=HttpResponse)


def _no_store(response: _Response) -> _Response:
    # Metrics are live figures, different per caller: never serve them from a cache.
    response["Cache-Control"] = "no-store"
    response["Vary"] = "Accept, Accept-Encoding, Authorization, Cookie"
    return response


def _plain(status: int, message: str) -> HttpResponse:
    response = HttpResponse(f"{message}\n", status=status, content_type="text/plain; charset=utf-8")
    return _no_store(response)


def _retry_later(status: int, message: str, seconds: float) -> HttpResponse:
    response = _plain(status, message)
    response["Retry-After"] = str(max(1, round(seconds)))
    return response


def _unauthorized() -> HttpResponse:
    response = _plain(401, "Authentication required.")
    response["WWW-Authenticate"] = access.CHALLENGE
    return response


# Only GET and HEAD are served, which CSRF does not concern: without the exemption a POST
# would meet the CSRF check (403) before require_safe could answer 405.
@csrf_exempt
@login_not_required  # a scraper must get 401, never a redirect to a login page
@require_safe  # GET and HEAD only: 405 with Allow otherwise
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the caller's families in Prometheus text or OpenMetrics, by ``Accept``."""
    if not app_settings.ENABLED:
        raise Http404("metrics are disabled")
    timeout = scrape_timeout(request)
    # One budget for every query of the scrape: who is calling, what they see, the gauges.
    deadline = budget.Deadline(budget.database_budget(timeout))
    try:
        caller = access.authenticate(request, deadline=deadline)
        visibility = access.visibility(caller, deadline=deadline)
    except access.NotAuthenticated:
        return _unauthorized()
    except access.NoFamilies:
        return _plain(403, "No metric family is visible to you.")
    except access.Throttled as throttled:
        return _retry_later(429, "Too many requests.", throttled.retry_after)
    except access.Unavailable as unavailable:
        return _retry_later(
            503, "The database is unavailable; try again shortly.", unavailable.retry_after
        )
    result = exposition.render(
        accept=request.headers.get("Accept", ""),
        accept_encoding=request.headers.get("Accept-Encoding", ""),
        names=request.GET.getlist("name[]"),
        visibility=visibility,
        scrape_timeout=timeout,
        deadline=deadline,
    )
    response = HttpResponse(result.body, content_type=result.content_type)
    if result.content_encoding:
        response["Content-Encoding"] = result.content_encoding
    return _no_store(response)


# A health check answers within this, whatever the database does.
HEALTH_DATABASE_SECONDS = 1.0


def _database_reachable() -> bool:
    try:
        with budget.time_limited(HEALTH_DATABASE_SECONDS) as before_query:
            before_query()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM django_migrations LIMIT 1")
        return True
    except Exception:
        return False


def _authenticated(request: HttpRequest) -> bool:
    deadline = budget.Deadline(HEALTH_DATABASE_SECONDS)
    try:
        return access.authenticate(request, deadline=deadline).user is not None
    except (access.NotAuthenticated, access.Throttled, access.Unavailable):
        return False


# What /metrics/health answers about, in its body: the service, not Tamma's work, whose
# health (healthy, degraded, critical) is the System health page and GET /api/v1/health.
# Its words, ok and unavailable, are not the report's, so neither reads as the other.
HEALTH_COVERS = (
    "this service: it answers and its database is reachable (for load balancers); "
    "the health of Tamma's work (approvals, escalations, the queue, the loops) is {page} "
    "and {api}"
)


@csrf_exempt
@login_not_required
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers; details for authenticated callers only."""
    start = time.perf_counter()
    reachable = _database_reachable()
    covers = HEALTH_COVERS.format(
        page=reverse("tamma_metrics:health-page"), api=reverse("tamma_metrics:api-health")
    )
    body: dict = {
        "status": "ok" if reachable else "unavailable",
        "covers": covers,
        "database": {"reachable": reachable},
    }
    if _authenticated(request):
        body.update(
            {
                "version": __version__,
                "enabled": bool(app_settings.ENABLED),
                "multiprocess": instruments.multiprocess_dir() is not None,
                "families": dict(Counter(f.kind.value for f in catalogue.families())),
                "last_scrape": exposition.last_scrape(),
                "check_duration_seconds": time.perf_counter() - start,
            }
        )
    return _no_store(JsonResponse(body, status=200 if reachable else 503))

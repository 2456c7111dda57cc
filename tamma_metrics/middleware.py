"""Records ``api_response_duration_seconds`` for every view, labelled by route name."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import record

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

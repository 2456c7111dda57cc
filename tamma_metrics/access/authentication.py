"""Who is calling, over HTTP: bearer tokens, basic auth and sessions, failed attempts
per IP, throttles per principal, and the DRF classes of the API.

Each limit has the scope its purpose needs (with a shared cache; docs/access.md):
failed attempts count per client IP across every host (brute force does not get a
fresh allowance per host); the API is limited per caller across every host (one
caller's load on the shared database); a scrape is limited per caller per host, since
Prometheus scrapes each host at its interval and N hosts must not share one allowance.

Callers authenticate with a bearer ``ApiToken`` (what Prometheus sends), HTTP basic
against Django users, or a Django session. A locked or slow database never holds the
answer past the caller's deadline (``budget.Deadline``): a scrape is then answered by a
recent verification of the same credentials (``callers``), anything else by
Unavailable (503).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import socket
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.contrib.auth import authenticate as check_password
from django.db import DatabaseError
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle

from .. import budget
from ..conf import app_settings, cache_weakness, worker_processes
from ..models import ApiToken
from ..models.access import TOKEN_PREFIX, digest
from . import callers
from .callers import Caller, NotAuthenticated, Throttled, Unavailable

if TYPE_CHECKING:

    class _MarkedRequest(HttpRequest):
        """A request as ``authenticate`` leaves it: what the throttle and
        ResponseTimeMiddleware read, beside Django's own attributes."""

        tamma_token: ApiToken
        tamma_principal: str
        tamma_user_type: str


__all__ = [
    "CHALLENGE",
    "CanIngest",
    "CanWriteState",
    "PrincipalThrottle",
    "TokenAuthentication",
    "authenticate",
    "host_identity",
    "share",
    "user_type",
    "worker_processes",
]

logger = logging.getLogger(__name__)

CHALLENGE = 'Basic realm="tamma-metrics", charset="UTF-8", Bearer realm="tamma-metrics"'
MAX_AUTHORIZATION_LENGTH = 1024
FAILED_GROUP = "tamma_metrics.failed_auth"


def share(rate: str) -> str:
    """This process's share of ``rate`` ("120/m"): all of it when the default cache is
    shared by the processes, else an equal part (at least 1), so that processes which
    cannot see each other's counts let through no more than ``rate`` together."""
    processes = worker_processes()
    if cache_weakness() != "private" or processes == 1:
        return rate
    count, _, period = rate.partition("/")
    try:
        return f"{max(1, int(count) // processes)}/{period}"
    except ValueError:
        return rate  # reported by check_settings (E009)


def _failed_attempts(request: HttpRequest, *, count: bool) -> None:
    """Count a failed attempt from the client's IP, or look before trying one; raise when
    the IP has used up its FAILED_AUTH_RATE."""
    rate = share(app_settings.FAILED_AUTH_RATE)
    usage = get_usage(request, group=FAILED_GROUP, key="ip", rate=rate, increment=count)
    # Looking (count=False) refuses at the limit: the next attempt would exceed it.
    if usage and (usage["should_limit"] or (not count and usage["count"] >= usage["limit"])):
        raise Throttled(usage["time_left"])


RATES = {"metrics": "THROTTLE_RATE", "api": "API_THROTTLE_RATE"}


_HOSTNAME = socket.gethostname()


def host_identity(request: HttpRequest) -> str:
    """This server as a scrape target: the machine's name and the port the request
    arrived on (the listening socket's, never a header a client sets), so two servers
    on one machine are two targets too."""
    return f"{_HOSTNAME}:{request.META.get('SERVER_PORT', '')}"


class PrincipalThrottle(SimpleRateThrottle):
    """DRF's rate throttle keyed by the authenticated token or user, per endpoint scope:
    per host for scrapes, across hosts for the API."""

    scope: str  # always set (DRF's own throttles may have none)

    def __init__(self, scope: str = "metrics") -> None:
        self.scope = scope
        super().__init__()

    def get_rate(self) -> str:
        return share(getattr(app_settings, RATES[self.scope]))

    def get_cache_key(self, request: Any, view: Any) -> str:
        ident = request.tamma_principal
        if self.scope == "metrics":
            ident = f"{ident}@{host_identity(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


def _bearer(credentials: str) -> ApiToken:
    parts = credentials.split("_")
    if len(parts) < 3 or parts[0] != TOKEN_PREFIX:
        raise NotAuthenticated
    prefix, secret = parts[1], "_".join(parts[2:])
    token = ApiToken.objects.usable().select_related("user").filter(prefix=prefix).first()
    # Compare bytes: compare_digest raises TypeError on non-ASCII str.
    if token is None or not hmac.compare_digest(token.digest.encode(), digest(secret).encode()):
        raise NotAuthenticated
    return token


def _basic(request: HttpRequest, credentials: str) -> Any:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise NotAuthenticated from None
    username, colon, password = decoded.partition(":")  # passwords may contain ':'
    if not colon or not username:
        raise NotAuthenticated
    # A password check costs ~0.3 s of CPU (PBKDF2): refuse a flooding IP before it.
    _failed_attempts(request, count=False)
    user = check_password(request, username=username, password=password)
    if user is None:
        raise NotAuthenticated
    return user


def _credentials(request: HttpRequest, header: str) -> tuple[Any, str, str]:
    """(user, method, principal key) from an Authorization header."""
    if len(header) > MAX_AUTHORIZATION_LENGTH or not header.isascii():
        raise NotAuthenticated
    scheme, _, credentials = header.strip().partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "bearer":
        token = _bearer(credentials)
        # Its last use is written after the lookup.
        cast("_MarkedRequest", request).tamma_token = token
        return token.user, "token", f"token:{token.pk}"
    if scheme == "basic":
        user = _basic(request, credentials)
        return user, "basic", f"user:{user.pk}"
    raise NotAuthenticated


_PROCESS_KEY = secrets.token_bytes(32)  # never leaves the process


def _fingerprint(request: HttpRequest, header: str) -> bytes:
    presented = header or "session:" + request.COOKIES.get(settings.SESSION_COOKIE_NAME, "")
    return hmac.new(_PROCESS_KEY, presented.encode("utf-8", "surrogatepass"), "sha256").digest()


def authenticate(
    request: HttpRequest, scope: str = "metrics", *, deadline: budget.Deadline | None = None
) -> Caller:
    """Who is calling; raises NotAuthenticated, Throttled or Unavailable.

    Failed attempts are counted per client IP (a valid token still passes from an IP
    that is over the limit, so an attacker cannot lock out the scraper); an
    authenticated principal is throttled at THROTTLE_RATE. The database lookups finish
    by ``deadline``; when they cannot, a scrape is answered by a verification of the
    same credentials made within RECENTLY_VERIFIED_SECONDS, anything else gets
    Unavailable.
    """
    if not app_settings.AUTH_ENABLED and scope == "metrics":
        return Caller(None, "open")  # opens reading /metrics only, never the API
    header = request.headers.get("Authorization", "")
    fingerprint = _fingerprint(request, header)
    try:
        with budget.within(deadline):
            user, method, principal = _lookup(request, header)
    except NotAuthenticated:
        callers.forget(fingerprint)
        if header:
            _failed_attempts(request, count=True)
        raise
    except (DatabaseError, budget.BudgetExhausted) as exc:
        # Only a scrape has something to serve without the database (the in-process
        # families); the API would fail on its next query, after a second wait.
        recent = callers.recently_verified(fingerprint) if scope == "metrics" else None
        if recent is None:
            logger.warning("tamma_metrics: cannot authenticate, database unavailable: %s", exc)
            raise Unavailable from None
        caller, principal, _ = recent
        user, method = caller.user, caller.method
    else:
        callers.remember(Caller(user, method, fingerprint), principal)
        _touch(getattr(request, "tamma_token", None), deadline)
    marked = cast("_MarkedRequest", request)
    marked.tamma_principal = principal
    # What ResponseTimeMiddleware labels the response with (its user_type): request.user
    # is the session's, anonymous for a token or basic caller outside DRF.
    marked.tamma_user_type = user_type(user, method)
    throttle = PrincipalThrottle(scope)
    # A plain HttpRequest and no view: get_cache_key above reads only the marks set here.
    if not throttle.allow_request(request, None):  # type: ignore[arg-type]
        raise Throttled(throttle.wait() or 1)
    return Caller(user, method, fingerprint)


def user_type(user: Any, method: str) -> str:
    """The ``user_type`` label of an authenticated caller: ``service`` for a bearer
    token (what machines send: Prometheus, Tamma's workers), else ``staff`` or ``user``
    by the account; never its name."""
    if method == "token":
        return "service"
    return "staff" if getattr(user, "is_staff", False) else "user"


def _touch(token: ApiToken | None, deadline: budget.Deadline | None) -> None:
    """Write the token's last use, on its own and best effort: in the lookup's
    transaction the write would have to upgrade SQLite's read lock, which fails at once
    (no waiting) while another process writes."""
    if token is None:
        return
    try:
        with budget.within(deadline):
            token.touch()
    except (DatabaseError, budget.BudgetExhausted):
        logger.info("tamma_metrics: a token's last use was not recorded (database busy)")


def _lookup(request: HttpRequest, header: str) -> tuple[Any, str, str]:
    if header:
        user, method, principal = _credentials(request, header)
    else:
        user, method = getattr(request, "user", None), "session"
        principal = f"user:{getattr(user, 'pk', None)}"
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotAuthenticated
    return user, method, principal


class TokenAuthentication(BaseAuthentication):
    """The same stack for the DRF API: bearer token, basic, or session (with CSRF)."""

    scope = "api"

    def authenticate(self, request: Any) -> tuple[Any, Caller] | None:
        try:
            caller = authenticate(request._request, self.scope)
        except NotAuthenticated:
            if request._request.headers.get("Authorization"):
                raise exceptions.AuthenticationFailed("Invalid credentials.") from None
            return None
        except Throttled as throttled:
            raise exceptions.Throttled(wait=throttled.retry_after) from None
        if caller.method == "session":
            SessionAuthentication().enforce_csrf(request)
        return caller.user, caller

    def authenticate_header(self, request: Any) -> str:
        return CHALLENGE


class _HasPermission(BasePermission):
    permission = ""

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.has_perm(self.permission))


class CanIngest(_HasPermission):
    """Reporting events needs ``tamma_metrics.add_event`` (the ``worker`` role has it)."""

    permission = "tamma_metrics.add_event"
    message = "Reporting events needs the tamma_metrics.add_event permission."


class CanWriteState(_HasPermission):
    """Writing Tamma's state needs ``tamma_metrics.change_domain`` (the ``orchestrator``
    role has it)."""

    permission = "tamma_metrics.change_domain"
    message = "Writing state needs the tamma_metrics.change_domain permission."

"""Every "who may see this" decision: authentication on /metrics and family visibility.

Callers authenticate with a bearer ``ApiToken`` (what Prometheus sends), HTTP basic
against Django users, or a Django session. What they see is decided by the guardian
object permission ``view_metricfamily`` on ``MetricFamily`` rows, granted to their
groups (roles) or to them; families no row covers are for superusers only. The
permitted set is cached per user under a version that any permission change bumps,
so an edit in the admin applies on the next scrape in every process sharing the cache.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate as check_password
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from guardian.shortcuts import get_objects_for_user
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle

from . import budget, catalogue
from .conf import app_settings, on_reset
from .models import ApiToken, MetricFamily
from .models.access import TOKEN_PREFIX, digest

logger = logging.getLogger(__name__)

CHALLENGE = 'Basic realm="tamma-metrics", charset="UTF-8", Bearer realm="tamma-metrics"'
MAX_AUTHORIZATION_LENGTH = 1024
VERSION_KEY = "tamma_metrics:access_version"
CACHE_SECONDS = 300
VIEW_PERMISSION = "view_metricfamily"


class NotAuthenticated(Exception):
    """No usable credentials: answer 401 with the challenge."""


class NoFamilies(Exception):
    """Authenticated, but no family is visible: answer 403."""


class Unavailable(Exception):
    """The database did not answer within the budget and no recent verification vouches
    for the caller: answer 503 with Retry-After, never a 500 or a hang."""

    retry_after = 5


class Throttled(Exception):
    """Too many requests: answer 429 with Retry-After."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = max(1, math.ceil(retry_after))


FAILED_GROUP = "tamma_metrics.failed_auth"


# Caches whose counts a process keeps to itself.
_PRIVATE_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
}


def worker_processes() -> int:
    """WORKER_PROCESSES, else gunicorn's WEB_CONCURRENCY, else 1."""
    configured = app_settings.WORKER_PROCESSES or os.environ.get("WEB_CONCURRENCY") or 1
    try:
        return max(1, int(configured))
    except (TypeError, ValueError):
        return 1


def share(rate: str) -> str:
    """This process's share of ``rate`` ("120/m"): all of it when the default cache is
    shared by the processes, else an equal part (at least 1), so that processes which
    cannot see each other's counts let through no more than ``rate`` together."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    processes = worker_processes()
    if backend not in _PRIVATE_CACHES or processes == 1:
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


class PrincipalThrottle(SimpleRateThrottle):
    """DRF's rate throttle keyed by the authenticated token or user, per endpoint scope."""

    def __init__(self, scope: str = "metrics") -> None:
        self.scope = scope
        super().__init__()

    def get_rate(self) -> str:
        return share(getattr(app_settings, RATES[self.scope]))

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": request.tamma_principal}


@dataclass(frozen=True)
class Caller:
    user: Any | None  # None when authentication is switched off
    method: str  # token, basic, session or open


@dataclass(frozen=True)
class Visibility:
    """What a caller may see: None families means everything."""

    families: frozenset[str] | None
    uncovered: bool  # families no MetricFamily row covers (superusers only)

    def allows(self, metric_name: str) -> bool:
        if self.families is None:
            return True
        owner = catalogue.owner_of(metric_name)
        return self.uncovered if owner is None else owner in self.families

    def allows_family(self, name: str) -> bool:
        return self.families is None or name in self.families


EVERYTHING = Visibility(None, True)


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
        request.tamma_token = token  # its last use is written after the lookup
        return token.user, "token", f"token:{token.pk}"
    if scheme == "basic":
        user = _basic(request, credentials)
        return user, "basic", f"user:{user.pk}"
    raise NotAuthenticated


# -- verified recently: what answers while the database does not ----------------------
#
# Each successful authentication is remembered in this process under an HMAC of the
# presented credentials (the Authorization header, or the session cookie) with a key that
# never leaves the process. So only the same credentials find the entry: not the stored
# token digest (exporter-toolkit's CVE-2022-46146 let a cached hash pass as a password),
# not another process. While the database is up every request is checked against it
# (revocation shows at once); only when it fails to answer in time does an entry verified
# within RECENTLY_VERIFIED_SECONDS stand in.

_PROCESS_KEY = secrets.token_bytes(32)
_RECENT_LIMIT = 1_000
_recent: OrderedDict[bytes, tuple[float, Caller, str, Visibility | None]] = OrderedDict()
_recent_lock = threading.Lock()


def _fingerprint(request: HttpRequest, header: str) -> bytes:
    presented = header or "session:" + request.COOKIES.get(settings.SESSION_COOKIE_NAME, "")
    return hmac.new(_PROCESS_KEY, presented.encode("utf-8", "surrogatepass"), "sha256").digest()


def _remember(fingerprint: bytes, caller: Caller, principal: str, seen: Visibility | None) -> None:
    with _recent_lock:
        _recent[fingerprint] = (time.monotonic(), caller, principal, seen)
        _recent.move_to_end(fingerprint)
        while len(_recent) > _RECENT_LIMIT:
            _recent.popitem(last=False)


def _remember_seen(fingerprint: bytes, seen: Visibility) -> None:
    """Add what the verified caller may see to its entry (made by ``authenticate``)."""
    with _recent_lock:
        entry = _recent.get(fingerprint)
        if entry is not None:
            _recent[fingerprint] = (*entry[:3], seen)


def _recently_verified(fingerprint: bytes) -> tuple[Caller, str, Visibility | None] | None:
    with _recent_lock:
        entry = _recent.get(fingerprint)
    if entry is None:
        return None
    at, caller, principal, seen = entry
    if time.monotonic() - at > float(app_settings.RECENTLY_VERIFIED_SECONDS):
        return None
    return caller, principal, seen


def _forget(fingerprint: bytes) -> None:
    with _recent_lock:
        _recent.pop(fingerprint, None)


@on_reset
def forget_verified() -> None:
    """Forget every remembered verification (tests; a password or token change)."""
    with _recent_lock:
        _recent.clear()


@contextlib.contextmanager
def _within(deadline: budget.Deadline | None) -> Iterator[None]:
    """The block's queries finish by ``deadline`` (or fail with DatabaseError)."""
    if deadline is None:
        yield
        return
    with budget.time_limited(deadline.remaining()) as before_query:
        before_query()
        yield


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
    request.tamma_fingerprint = fingerprint
    try:
        with _within(deadline):
            user, method, principal = _lookup(request, header)
    except NotAuthenticated:
        _forget(fingerprint)  # revoked or expired: not even an outage brings it back
        if header:
            _failed_attempts(request, count=True)
        raise
    except (DatabaseError, budget.BudgetExhausted) as exc:
        # Only a scrape has something to serve without the database (the in-process
        # families); the API would fail on its next query, after a second wait.
        recent = _recently_verified(fingerprint) if scope == "metrics" else None
        if recent is None:
            logger.warning("tamma_metrics: cannot authenticate, database unavailable: %s", exc)
            raise Unavailable from None
        caller, principal, _ = recent
        user, method = caller.user, caller.method
    else:
        _remember(fingerprint, Caller(user, method), principal, None)
        _touch(getattr(request, "tamma_token", None), deadline)
    request.tamma_principal = principal
    throttle = PrincipalThrottle(scope)
    if not throttle.allow_request(request, None):
        raise Throttled(throttle.wait() or 1)
    return Caller(user, method)


def _touch(token: ApiToken | None, deadline: budget.Deadline | None) -> None:
    """Write the token's last use, on its own and best effort: in the lookup's
    transaction the write would have to upgrade SQLite's read lock, which fails at once
    (no waiting) while another process writes."""
    if token is None:
        return
    try:
        with _within(deadline):
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


def _version() -> int:
    return cache.get(VERSION_KEY, 0)


def bump_version(**kwargs: Any) -> None:
    """Invalidate every cached visibility (a signal handler: takes any arguments)."""
    try:
        cache.incr(VERSION_KEY)
    except ValueError:  # not set yet
        cache.set(VERSION_KEY, 1, None)


def visibility(
    caller: Caller, *, deadline: budget.Deadline | None = None, request: HttpRequest | None = None
) -> Visibility:
    """The families a caller may see; raises NoFamilies when there are none, and
    Unavailable when the database does not answer by ``deadline`` and no recent
    verification of the same credentials (``request``) knows the answer."""
    user = caller.user
    if user is None or user.is_superuser:
        return EVERYTHING
    key = f"tamma_metrics:families:{user.pk}:{_version()}"
    names = cache.get(key)
    fingerprint = getattr(request, "tamma_fingerprint", None)
    if names is None:
        try:
            with _within(deadline):
                names = frozenset(
                    get_objects_for_user(
                        user,
                        VIEW_PERMISSION,
                        klass=MetricFamily,
                        with_superuser=False,
                        accept_global_perms=False,
                    ).values_list("name", flat=True)
                )
        except (DatabaseError, budget.BudgetExhausted):
            recent = _recently_verified(fingerprint) if fingerprint else None
            if recent is None or recent[2] is None:
                raise Unavailable from None
            return recent[2]
        cache.set(key, names, CACHE_SECONDS)
    if not names:
        raise NoFamilies
    seen = Visibility(names, False)
    if fingerprint is not None:
        _remember_seen(fingerprint, seen)
    return seen


def may_create_token_for(user: Any, owner: Any) -> bool:
    """A token acts as its owner: only the owner, a superuser, or who holds the explicit
    permission to act for others may create one."""
    return (
        owner.pk == user.pk
        or user.is_superuser
        or user.has_perm("tamma_metrics.create_token_for_others")
    )


def may_grant(user: Any, families: Iterable[MetricFamily]) -> bool:
    """Whether ``user`` may let others see ``families``: only families it sees itself,
    so nobody hands out (to others or, through a role, to itself) more than it has."""
    if user.is_superuser:
        return True
    try:
        seen = visibility(Caller(user, "session"))
    except NoFamilies:
        return False
    return all(seen.allows_family(family.name) for family in families)


def sync_metric_families(**kwargs: Any) -> int:
    """Create or update one MetricFamily row per catalogue family and runtime pattern."""
    rows = {
        family.name: {
            "kind": family.kind.value,
            "audience": family.audience.value,
            "help_text": family.help,
        }
        for family in catalogue.families()
    }
    for pattern, help_text in catalogue.RUNTIME_PATTERNS.items():
        rows[pattern] = {
            "kind": "",
            "audience": catalogue.Audience.OPERATIONS.value,
            "help_text": help_text,
        }
    existing = {row.name: row for row in MetricFamily.objects.all()}
    created = 0
    for name, fields in rows.items():
        row = existing.get(name)
        if row is None:
            MetricFamily.objects.create(name=name, **fields)
            created += 1
        elif any(getattr(row, field) != value for field, value in fields.items()):
            MetricFamily.objects.filter(pk=row.pk).update(**fields)
    return created


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


class CanIngest(BasePermission):
    """Reporting events needs ``tamma_metrics.add_event`` (the ``worker`` role has it)."""

    message = "Reporting events needs the tamma_metrics.add_event permission."

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.has_perm("tamma_metrics.add_event"))


def connect_signals() -> None:
    """Bump the visibility version whenever anything that decides it changes."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from .models import MetricFamilyGroupPermission, MetricFamilyUserPermission

    user_model = get_user_model()
    for model in (
        MetricFamily,
        MetricFamilyUserPermission,
        MetricFamilyGroupPermission,
        user_model,
        Group,
    ):
        post_save.connect(bump_version, sender=model, dispatch_uid=f"tamma_access_{model}")
        post_delete.connect(bump_version, sender=model, dispatch_uid=f"tamma_access_d_{model}")
    m2m_changed.connect(
        bump_version, sender=user_model.groups.through, dispatch_uid="tamma_access_groups"
    )

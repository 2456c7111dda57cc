"""Throttles on /metrics: per principal, and per IP for failed attempts before hashing."""

from __future__ import annotations

import logging
import socket

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import Group, User

from tamma_metrics import access
from tamma_metrics.conf import cache_weakness
from tamma_metrics.models import ApiToken
from tamma_metrics.roles import PROMETHEUS, seed_roles
from tests.utils import basic

pytestmark = pytest.mark.django_db


@pytest.fixture
def prometheus_user():
    seed_roles()
    user = User.objects.create_user("prom", password="right")
    user.groups.add(Group.objects.get(name=PROMETHEUS))
    return user


@pytest.fixture
def hasher_calls(monkeypatch):
    """How many times the password hasher ran."""
    calls = []
    original = MD5PasswordHasher.encode

    def counting(self, password, salt):
        calls.append(1)
        return original(self, password, salt)

    monkeypatch.setattr(MD5PasswordHasher, "encode", counting)
    return calls


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_a_principal_over_its_rate_gets_429_with_retry_after(anonymous, prometheus_user, settings):
    settings.TAMMA_METRICS = {"THROTTLE_RATE": "3/m"}
    first = ApiToken.create_for(prometheus_user, "a")[1]
    second = ApiToken.create_for(prometheus_user, "b")[1]
    codes = [anonymous.get("/metrics", **bearer(first)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    throttled = anonymous.get("/metrics", **bearer(first))
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert throttled["Cache-Control"] == "no-store"
    # Another token of the same user is another principal.
    assert anonymous.get("/metrics", **bearer(second)).status_code == 200


def test_failed_attempts_per_ip_stop_before_the_password_hash(
    anonymous, prometheus_user, settings, hasher_calls
):
    settings.TAMMA_METRICS = {"FAILED_AUTH_RATE": "2/m"}
    wrong = {"HTTP_AUTHORIZATION": basic("prom", "wrong"), "REMOTE_ADDR": "203.0.113.9"}
    start = len(hasher_calls)
    assert anonymous.get("/metrics", **wrong).status_code == 401
    assert anonymous.get("/metrics", **wrong).status_code == 401
    hashed = len(hasher_calls)
    assert hashed - start == 2
    flooded = anonymous.get("/metrics", **wrong)
    assert flooded.status_code == 429
    assert int(flooded["Retry-After"]) >= 1
    assert len(hasher_calls) == hashed  # refused without hashing
    # Even the right password waits: the IP is over its limit...
    right = {"HTTP_AUTHORIZATION": basic("prom", "right"), "REMOTE_ADDR": "203.0.113.9"}
    assert anonymous.get("/metrics", **right).status_code == 429
    # ...but the scraper's token still works from there, and other IPs are not affected.
    token = ApiToken.create_for(prometheus_user, "scraper")[1]
    assert anonymous.get("/metrics", REMOTE_ADDR="203.0.113.9", **bearer(token)).status_code == 200
    other = {"HTTP_AUTHORIZATION": basic("prom", "right"), "REMOTE_ADDR": "198.51.100.7"}
    assert anonymous.get("/metrics", **other).status_code == 200


def test_unknown_user_and_wrong_password_take_the_same_path(
    anonymous, prometheus_user, hasher_calls
):
    start = len(hasher_calls)
    unknown = anonymous.get("/metrics", HTTP_AUTHORIZATION=basic("nobody", "x"))
    after_unknown = len(hasher_calls)
    wrong = anonymous.get("/metrics", HTTP_AUTHORIZATION=basic("prom", "x"))
    assert unknown.status_code == wrong.status_code == 401
    assert after_unknown - start == 1
    assert len(hasher_calls) - after_unknown == 1
    assert unknown.content == wrong.content
    assert unknown["WWW-Authenticate"] == wrong["WWW-Authenticate"]


def test_tokens_are_never_logged(anonymous, prometheus_user, caplog):
    caplog.set_level(logging.DEBUG)
    token = ApiToken.create_for(prometheus_user, "x")[1]
    secret = token.split("_", 2)[2]
    anonymous.get("/metrics", **bearer(token[:-2] + "zz"))
    anonymous.get("/metrics", **bearer(token))
    assert secret[:20] not in caplog.text


def test_no_redirects_even_with_login_required_middleware(anonymous, settings):
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics/health").status_code == 200


def test_with_a_private_cache_each_process_takes_its_share_of_the_rate(
    anonymous, prometheus_user, settings
):
    """Three workers with locmem caches let through at most the configured rate together."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.TAMMA_METRICS = {"THROTTLE_RATE": "7/m", "WORKER_PROCESSES": 3}
    token = ApiToken.create_for(prometheus_user, "a")[1]
    codes = [anonymous.get("/metrics", **bearer(token)).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]  # this process's share: 2 of 7
    assert access.share("7/m") == "2/m"
    assert access.share("2/m") == "1/m"  # never 0: a process always serves someone
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": "redis://127.0.0.1:6379/0"}
    }  # fmt: skip
    assert access.share("7/m") == "7/m"  # a shared cache counts for every process


def test_worker_processes_follow_web_concurrency(settings, monkeypatch):
    settings.TAMMA_METRICS = {}
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert access.worker_processes() == 4
    monkeypatch.setenv("WEB_CONCURRENCY", "lots")
    assert access.worker_processes() == 1


def _host(port: int) -> dict[str, str]:
    """A request as it arrives at the server listening on ``port`` (another host)."""
    return {"SERVER_PORT": str(port)}


def test_each_limit_is_keyed_by_the_scope_its_purpose_needs(rf):
    """Scrapes per caller per host; the API per caller across hosts."""
    request = rf.get("/metrics", SERVER_PORT="9100")
    request.tamma_principal = "token:7"
    host = f"{socket.gethostname()}:9100"
    assert access.host_identity(request) == host
    assert access.PrincipalThrottle("metrics").get_cache_key(request, None) == (
        f"throttle_metrics_token:7@{host}"
    )
    assert access.PrincipalThrottle("api").get_cache_key(request, None) == "throttle_api_token:7"


def test_a_scrape_token_gets_the_full_rate_on_every_host(anonymous, prometheus_user, settings):
    """Prometheus scraping N hosts at its interval must never be refused for it."""
    settings.TAMMA_METRICS = {"THROTTLE_RATE": "2/m"}
    token = ApiToken.create_for(prometheus_user, "a")[1]
    codes = {
        port: [anonymous.get("/metrics", **bearer(token), **_host(port)).status_code for _ in "abc"]
        for port in (8001, 8002, 8003)
    }
    assert codes == {port: [200, 200, 429] for port in (8001, 8002, 8003)}


def test_the_api_rate_is_one_callers_total_across_hosts(anonymous, prometheus_user, settings):
    settings.TAMMA_METRICS = {"API_THROTTLE_RATE": "3/m"}
    token = ApiToken.create_for(prometheus_user, "a")[1]
    codes = [
        anonymous.get("/api/v1/families", **bearer(token), **_host(port)).status_code
        for port in (8001, 8002, 8001, 8002)
    ]
    assert codes == [200, 200, 200, 429]


def test_failed_attempts_count_across_hosts(anonymous, prometheus_user, settings, hasher_calls):
    settings.TAMMA_METRICS = {"FAILED_AUTH_RATE": "2/m"}
    wrong = {"HTTP_AUTHORIZATION": basic("prom", "wrong"), "REMOTE_ADDR": "203.0.113.9"}
    codes = [anonymous.get("/metrics", **wrong, **_host(port)).status_code for port in (1, 2, 3)]
    assert codes == [401, 401, 429]
    assert len(hasher_calls) == 2  # the third host refused before hashing


@pytest.mark.parametrize(
    ("backend", "weakness", "share"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", "private", "2/m"),
        ("django_prometheus.cache.backends.locmem.LocMemCache", "private", "2/m"),
        ("django.core.cache.backends.dummy.DummyCache", "private", "2/m"),
        ("django.core.cache.backends.filebased.FileBasedCache", "approximate", "7/m"),
        ("django_prometheus.cache.backends.filebased.FileBasedCache", "approximate", "7/m"),
        ("django.core.cache.backends.db.DatabaseCache", "approximate", "7/m"),
        ("django.core.cache.backends.redis.RedisCache", None, "7/m"),
        ("django_prometheus.cache.backends.redis.NativeRedisCache", None, "7/m"),
    ],
)
def test_a_cache_is_judged_by_the_backend_it_is(settings, backend, weakness, share):
    """django-prometheus's instrumented backends are what they wrap."""
    settings.TAMMA_METRICS = {"WORKER_PROCESSES": 3}
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": "redis://127.0.0.1:1/0"}}
    assert cache_weakness() == weakness
    assert access.share("7/m") == share

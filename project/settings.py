"""Settings of the demo site that runs tamma_metrics.

Twelve-factor: DATABASE_URL (default: db.sqlite3 in the repository root),
CACHE_URL (optional), SECRET_KEY, DEBUG, HTTPS and ALLOWED_HOSTS come from the
environment. Production-safe unless told otherwise: DEBUG is off unless DEBUG=true
(`make run` sets it for the demo); HTTPS=true adds the settings a site served only over
TLS wants (redirect, HSTS, secure cookies), with which `check --deploy` is clean.
"""

import os
from pathlib import Path

from django.core.management.utils import get_random_secret_key

from project.environment import cache_from_url, database_from_url
from tamma_metrics.conf import parse_bool

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = parse_bool(os.environ.get("DEBUG", "false"), "DEBUG")


def _demo_secret_key() -> str:
    """One random key per checkout, kept out of git, shared by every demo process."""
    path = BASE_DIR / ".run" / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(get_random_secret_key())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY") or _demo_secret_key()
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served locally, no CDN
    "guardian",
    "tamma_metrics",
    "project",
]

MIDDLEWARE = [
    # First: on METRICS_PORT nothing but /metrics and /metrics/health runs.
    "tamma_metrics.middleware.MetricsPortMiddleware",
    "project.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A failing database answers 503 with Retry-After, not a 500 (login, admin pages).
    "tamma_metrics.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tamma_metrics.middleware.ResponseTimeMiddleware",
    "project.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL"), f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=60
    )
}


CACHES = {"default": cache_from_url(os.environ.get("CACHE_URL", "locmem://"))}

# Served only over TLS (directly or behind a proxy that says so in X-Forwarded-Proto).
HTTPS = parse_bool(os.environ.get("HTTPS", "false"), "HTTPS")
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = int(os.environ.get("HSTS_SECONDS", str(365 * 24 * 3600)))
    # Subdomains of this host only (not its siblings); preload takes effect only if
    # the host is submitted to the browsers' list. Either can be turned off.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = parse_bool(
        os.environ.get("HSTS_INCLUDE_SUBDOMAINS", "true"), "HSTS_INCLUDE_SUBDOMAINS"
    )
    SECURE_HSTS_PRELOAD = parse_bool(os.environ.get("HSTS_PRELOAD", "true"), "HSTS_PRELOAD")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if parse_bool(os.environ.get("BEHIND_PROXY", "false"), "BEHIND_PROXY"):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".run" / "static"

# django-prometheus: its migration gauges would query the database at start-up.
PROMETHEUS_EXPORT_MIGRATIONS = False

TAMMA_METRICS = {
    "ENVIRONMENT": os.environ.get("TAMMA_ENVIRONMENT", "development"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"tamma_metrics": {"level": "INFO"}},
}

REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

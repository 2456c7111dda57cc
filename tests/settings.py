"""Settings for the test suite, kept apart from the demo site's.

The suite runs in prometheus_client's multiprocess mode, as `make run` and
production do: the folder must be set before prometheus_client is imported, which
happens when Django sets up the apps right after this module is read.
"""

import os
import tempfile
from pathlib import Path

from project.environment import cache_from_url, database_from_url

if os.environ.get("TAMMA_TEST_SINGLE_PROCESS") != "1":
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tamma-test-mp-"))

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
STATIC_URL = "static/"
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
    "project",  # the demo site's commands
]

MIDDLEWARE = [
    # First: on METRICS_PORT nothing but /metrics and /metrics/health runs.
    "tamma_metrics.middleware.MetricsPortMiddleware",
    "project.middleware.PrometheusBeforeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A failing database answers 503 with Retry-After, not a 500 (login, admin pages).
    "tamma_metrics.middleware.DatabaseUnavailableMiddleware",
    "tamma_metrics.middleware.ResponseTimeMiddleware",
    "project.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The demo site's overrides (branded admin, landing page), as project/ uses them.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# DATABASE_URL selects PostgreSQL, CACHE_URL Redis, for the second run of the suite; both
# through django-prometheus's engines, as the demo site runs them.
DATABASES = {"default": database_from_url(os.environ.get("DATABASE_URL"), "sqlite:///:memory:")}
CACHES = {"default": cache_from_url(os.environ.get("CACHE_URL", "locmem://"))}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests
PROMETHEUS_EXPORT_MIGRATIONS = False
# Tests change rows between scrapes and expect the gauges to follow at once; the
# gauge cache is tested with its own setting (tests/test_database_budget.py).
TAMMA_METRICS: dict = {"DATABASE_CACHE_SECONDS": 0}

REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

"""Settings, environment overrides and system checks."""

from __future__ import annotations

import os

import pytest
from django.core.checks import run_checks

from tamma_metrics import catalogue, checks
from tamma_metrics.conf import app_settings, cache_weakness
from tests.utils import run_python


def _ids(errors) -> set[str]:
    return {error.id for error in errors}


def test_defaults_are_clean():
    assert checks.check_settings() == []
    assert checks.check_multiprocess_dir() == []


def test_unknown_key_and_bad_prefix_are_errors(settings):
    settings.TAMMA_METRICS = {"PREFX": "x", "PREFIX": "9-bad"}
    assert _ids(checks.check_settings()) == {"tamma_metrics.E002", "tamma_metrics.E004"}


def test_environment_overrides_are_strict_booleans(settings, monkeypatch):
    monkeypatch.setenv("METRICS_AUTH_ENABLED", "false")
    app_settings.reload()
    assert app_settings.AUTH_ENABLED is False
    monkeypatch.setenv("METRICS_AUTH_ENABLED", "flase")
    app_settings.reload()
    assert _ids(checks.check_settings()) == {"tamma_metrics.E003"}
    monkeypatch.delenv("METRICS_AUTH_ENABLED")
    app_settings.reload()


def test_auth_off_outside_debug_warns(settings):
    settings.DEBUG = False
    settings.TAMMA_METRICS = {"AUTH_ENABLED": False}
    assert _ids(checks.check_auth_enabled()) == {"tamma_metrics.W001"}
    settings.DEBUG = True
    assert checks.check_auth_enabled() == []


def _messages(errors) -> list[tuple[str, str, str | None]]:
    return [(error.id, error.msg, error.hint) for error in errors]


def test_multiprocess_dir_errors_say_which_case(monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("")
    missing, a_file = str(tmp_path / "missing"), str(tmp_path / "a-file")
    cases = {
        "": (
            "PROMETHEUS_MULTIPROC_DIR is set but empty: prometheus_client then writes its "
            "files to the current directory, where no scrape reads them; set it to an "
            "existing, writable folder.",
            "Set it to a folder the site's processes share, or remove the variable to "
            "record in one process only (single-process mode).",
        ),
        missing: (
            f"PROMETHEUS_MULTIPROC_DIR={missing!r} does not exist.",
            "Create it (and empty it) before the processes start.",
        ),
        a_file: (
            f"PROMETHEUS_MULTIPROC_DIR={a_file!r} is not a folder.",
            "Point it at a folder, created (and emptied) before the processes start.",
        ),
    }
    for value, (message, hint) in cases.items():
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", value)
        assert _messages(checks.check_multiprocess_dir()) == [("tamma_metrics.E007", message, hint)]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere
    assert _messages(checks.check_multiprocess_dir()) == [
        ("tamma_metrics.E008", f"PROMETHEUS_MULTIPROC_DIR={str(tmp_path)!r} is not writable.", None)
    ]


def test_no_multiprocess_dir_is_single_process_mode_unless_several_processes_serve(
    monkeypatch, settings
):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    assert checks.check_multiprocess_dir() == []
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    assert checks.check_multiprocess_dir() == []
    hint = (
        "Set PROMETHEUS_MULTIPROC_DIR to a folder the processes share, created (and emptied) "
        "before they start (docs/serving.md)."
    )
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert _messages(checks.check_multiprocess_dir()) == [
        (
            "tamma_metrics.W003",
            "PROMETHEUS_MULTIPROC_DIR is not set while the site runs 3 processes "
            "(WEB_CONCURRENCY=3): each records events in its own registry, and a scrape "
            "shows only the events of the process that answers it.",
            hint,
        )
    ]
    settings.TAMMA_METRICS = {"WORKER_PROCESSES": 4}
    assert _messages(checks.check_multiprocess_dir()) == [
        (
            "tamma_metrics.W003",
            "PROMETHEUS_MULTIPROC_DIR is not set while the site runs 4 processes "
            "(WORKER_PROCESSES=4): each records events in its own registry, and a scrape "
            "shows only the events of the process that answers it.",
            hint,
        )
    ]


def test_prefix_setting_names_every_family(settings):
    settings.TAMMA_METRICS = {"PREFIX": "acme_"}
    assert catalogue.get("queue_depth").full_name == "acme_queue_depth"
    assert catalogue.get("ai_requests_total").metric_name == "acme_ai_requests"


def test_catalogue_is_well_formed():
    names = [family.name for family in catalogue.FAMILIES]
    assert len(names) == len(set(names))
    for family in catalogue.FAMILIES:
        assert catalogue.METRIC_NAME.match(family.full_name)
        assert (family.kind is catalogue.Kind.COUNTER) == family.name.endswith("_total")
        if family.kind is catalogue.Kind.HISTOGRAM:
            assert family.name.endswith("_seconds")
            assert list(family.buckets) == sorted(set(family.buckets))
        # Personal data never becomes a label.
        assert not {"title", "user", "username", "email", "name", "token"} & set(family.labels)
    with pytest.raises(KeyError, match="unknown metric family 'nope'"):
        catalogue.get("nope")


def test_only_the_unshared_cache_is_reported_in_the_test_settings():
    # The SQLite run uses LocMemCache, which is what W002 is about; the PostgreSQL run
    # Redis, which silences it.
    expected = {"tamma_metrics.W002"} if cache_weakness() else set()
    assert {e.id for e in run_checks() if e.id.startswith("tamma_metrics")} == expected


def test_a_shared_cache_silences_w002(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
        }
    }
    assert checks.check_shared_cache() == []
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache"}
    }
    assert _ids(checks.check_shared_cache()) == {"tamma_metrics.W002"}


@pytest.mark.parametrize(
    "bad",
    [
        {"DATABASE_BUDGET_SECONDS": 0},
        {"DATABASE_BUDGET_SECONDS": "5"},
        {"DATABASE_BUDGET_SECONDS": True},
        {"DATABASE_CACHE_SECONDS": -1},
        {"DATABASE_CACHE_SECONDS": None},
    ],
)
def test_bad_database_budget_or_cache_seconds_are_errors(settings, bad):
    settings.TAMMA_METRICS = bad
    assert _ids(checks.check_settings()) == {"tamma_metrics.E013"}


def test_database_budget_and_cache_accept_numbers(settings):
    settings.TAMMA_METRICS = {"DATABASE_BUDGET_SECONDS": 0.5, "DATABASE_CACHE_SECONDS": 0}
    assert checks.check_settings() == []


def test_bad_rates_are_errors(settings):
    settings.TAMMA_METRICS = {"THROTTLE_RATE": "120/minute", "FAILED_AUTH_RATE": "0/m"}
    assert _ids(checks.check_settings()) == {"tamma_metrics.E009"}


def test_serve_settings_pass_check_deploy_when_served_over_https(tmp_path):
    """DEBUG off by default; HTTPS=true adds the TLS settings: not one warning left."""
    env = {key: value for key, value in os.environ.items() if key != "DEBUG"}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        HTTPS="true",
        SECRET_KEY="x" * 60 + "long-and-random-enough-for-the-check-0123456789",
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        CACHE_URL="redis://127.0.0.1:6379/0",
    )
    done = run_python("manage.py", "check", "--deploy", "--fail-level", "WARNING", env=env)
    assert "System check identified no issues" in done.stdout + done.stderr


def test_debug_is_off_unless_turned_on(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "DEBUG"}
    env.update(DJANGO_SETTINGS_MODULE="project.settings")
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    assert run_python("-c", code, env=env).stdout.strip() == "False"
    env["DEBUG"] = "true"
    assert run_python("-c", code, env=env).stdout.strip() == "True"


def test_production_settings_pass_check_deploy_except_https(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "false",
        "SECRET_KEY": "x" * 60 + "long-and-random-enough-for-the-check-0123456789",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "CACHE_URL": "redis://127.0.0.1:6379/0",
    }
    done = run_python("manage.py", "check", "--deploy", "--fail-level", "ERROR", env=env)
    assert "tamma_metrics" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "limits",
    [{"cost_usd": 0}, {"cost_usd": float("inf")}, {"tokens": "many"}, {"pennies": 5}, []],
)
def test_bad_event_limits_are_errors(settings, limits):
    settings.TAMMA_METRICS = {"MAX_EVENT_VALUES": limits}
    assert _ids(checks.check_settings()) == {"tamma_metrics.E014"}


def test_event_limits_may_be_given_in_part(settings):
    from tamma_metrics.conf import max_event_value

    settings.TAMMA_METRICS = {"MAX_EVENT_VALUES": {"cost_usd": 50}}
    assert checks.check_settings() == []
    assert (max_event_value("cost_usd"), max_event_value("tokens")) == (50, 10_000_000)


def test_every_help_text_fits_the_metric_family_column():
    """SQLite does not enforce a column's length, PostgreSQL does (sync_metric_families
    writes each family's help on migrate)."""
    from tamma_metrics import catalogue
    from tamma_metrics.models import MetricFamily

    limit = MetricFamily._meta.get_field("help_text").max_length
    assert [f.name for f in catalogue.families() if len(f.help) > limit] == []

"""push_metrics without a gateway: argument errors, and an unreachable gateway counted."""

from __future__ import annotations

import os

import pytest
from django.core.management import CommandError, call_command
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.servers import free_port
from tests.utils import delta, run_python

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gateway": "127.0.0.1:9091"}, "must be an http"),
        ({"grouping": ["run"]}, "wants key=value"),
        ({"grouping": ["9run=x"]}, "wants key=value"),
        ({"grouping": ["job=x"]}, "cannot set job"),
        ({"grouping": ["run="]}, "needs a value"),
        ({"job": ""}, "must not be empty"),
        ({"timeout": 0}, "must be positive"),
    ],
)
def test_bad_arguments_are_clear_errors(options, message):
    arguments = {"gateway": "http://127.0.0.1:9091", "job": "batch", **options}
    with pytest.raises(CommandError, match=message):
        call_command("push_metrics", **arguments)


def test_disabled_metrics_push_nothing(settings):
    settings.TAMMA_METRICS = {"ENABLED": False}
    with pytest.raises(CommandError, match="metrics are disabled"):
        call_command("push_metrics", gateway="http://127.0.0.1:9091", job="batch")


def test_an_unreachable_gateway_is_an_error_and_counted(metrics):
    gateway = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    before = metrics()
    with pytest.raises(CommandError, match=f"could not push to the Pushgateway at {gateway}: "):
        call_command("push_metrics", gateway=gateway, job="batch", timeout=2)
    change = delta(metrics(), before)
    assert change.value("tamma_metrics_backend_errors_total", backend="pushgateway") == 1


@pytest.mark.slow
def test_from_the_command_line_it_exits_non_zero(tmp_path):
    folder = tmp_path / "multiproc"
    folder.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    gateway = f"http://127.0.0.1:{free_port()}"
    done = run_python(
        "manage.py", "push_metrics", "--gateway", gateway, "--job", "batch", env=env, returncode=1
    )
    assert f"CommandError: could not push to the Pushgateway at {gateway}: " in done.stderr
    # The failure is in the folder a later scrape merges.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    errors = registry.get_sample_value(
        "tamma_metrics_backend_errors_total", {"backend": "pushgateway"}
    )
    assert errors == 1

"""push_metrics -> a real Prometheus Pushgateway: the pushed families, exact values."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from tamma_metrics import record
from tests import factories
from tests.servers import Server, free_port, http_get, require, wait_until
from tests.utils import delta, parse

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

GROUP = {"job": "nightly", "run": "r42", "instance": ""}  # the gateway adds instance=""
CHANGE = {"change_type": "create", "language": "pushed_lang", "actor": "system", "file_type": "pg"}


@pytest.fixture
def gateway_server(tmp_path):
    binary = require("prometheus-pushgateway")
    port = free_port()
    # Debian's build persists to /var/lib/prometheus by default: keep it in memory.
    argv = [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
    server = Server(argv, tmp_path)
    server.url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_get(f"{server.url}/-/ready").status == 200)
        yield server
    finally:
        server.stop()


@pytest.fixture
def pushgateway(gateway_server) -> str:
    return gateway_server.url


def gateway_metrics(url: str):
    return parse(http_get(f"{url}/metrics").text)


def push(url: str, **options) -> None:
    call_command("push_metrics", gateway=url, job="nightly", grouping=["run=r42"], **options)


def test_pushed_families_arrive_with_exact_values(pushgateway, metrics):
    for priority in ("high", "high", "low"):
        factories.issue(status="queued", priority=priority)
    record.code_change(**CHANGE, count=3)  # a series no other test records
    push(pushgateway)
    pushed = gateway_metrics(pushgateway)
    assert pushed.value("tamma_code_changes_total", **CHANGE, **GROUP) == 3
    queue = {"queue_type": "issues", **GROUP}
    assert pushed.value("tamma_queue_depth", priority="high", **queue) == 2
    assert pushed.value("tamma_queue_depth", priority="low", **queue) == 1
    assert pushed.value("tamma_queue_depth", priority="critical", **queue) == 0
    assert pushed.value("tamma_metrics_collector_up", collector="database", **GROUP) == 1
    assert pushed.value("push_failure_time_seconds", **GROUP) == 0
    assert pushed.value("push_time_seconds", **GROUP) > 0

    # What the gateway serves is what a scrape serves, series by series.
    scraped = metrics()
    for name in ("tamma_code_changes_total", "tamma_ai_requests_total", "tamma_queue_depth"):
        local = scraped.series(name)
        remote = {labels - frozenset(GROUP.items()): v for labels, v in pushed.series(name).items()}
        assert remote == local, name

    record.code_change(**CHANGE, count=2)
    push(pushgateway)
    change = delta(gateway_metrics(pushgateway), pushed)
    assert change.value("tamma_code_changes_total", **CHANGE, **GROUP) == 2


def test_replace_and_name_choose_what_the_group_keeps(pushgateway):
    factories.issue(status="queued", priority="high")
    change_labels = {**CHANGE, "file_type": "replace"}  # counters outlive tests: a fresh series
    record.code_change(**change_labels)
    push(pushgateway)
    # The default (POST) replaces only the families pushed: the others stay.
    push(pushgateway, name=["tamma_queue_depth"])
    kept = gateway_metrics(pushgateway)
    assert kept.value("tamma_code_changes_total", **change_labels, **GROUP) == 1
    assert kept.value("tamma_queue_depth", queue_type="issues", priority="high", **GROUP) == 1
    # --replace (PUT) makes the group exactly what is pushed.
    push(pushgateway, name=["tamma_queue_depth"], replace=True)
    replaced = gateway_metrics(pushgateway)
    assert replaced.series("tamma_code_changes_total") == {}
    assert replaced.value("tamma_queue_depth", queue_type="issues", priority="high", **GROUP) == 1
    group_names = {name for name, labels in replaced if ("run", "r42") in labels}
    assert group_names == {"tamma_queue_depth", "push_time_seconds", "push_failure_time_seconds"}


def test_a_gateway_that_stopped_is_an_error_and_counted(gateway_server, metrics):
    before = metrics()
    push(gateway_server.url)
    assert delta(metrics(), before).value("tamma_metrics_backend_errors_total") == 0
    gateway_server.stop()
    with pytest.raises(
        CommandError, match=f"could not push to the Pushgateway at {gateway_server.url}"
    ):
        push(gateway_server.url, timeout=2)
    change = delta(metrics(), before)
    assert change.value("tamma_metrics_backend_errors_total", backend="pushgateway") == 1

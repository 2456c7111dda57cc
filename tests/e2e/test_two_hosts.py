"""Two hosts for real: two gunicorn masters (three workers and a multiprocess folder each)
share one PostgreSQL and one Redis; an HA pair of Prometheus servers, configured from
deploy/prometheus/prometheus.yml, scrapes both, remote-writes to VictoriaMetrics and sends
alerts to Alertmanager, configured from deploy/alertmanager/alertmanager.yml. This is the
proof of docs/serving.md#several-hosts:

- counters summed ``without(instance)`` in the long-term store equal the rows and what the
  hosts acknowledged; database gauges taken ``max without(instance)`` equal the rows;
- one scrape token scrapes every host at an interval whose total across hosts is over its
  rate (never refused); failed logins count across hosts; a permission change and a
  token revocation on one host apply on the other at the next request; the report cache
  is shared;
- a host stopped makes TammaTargetDown fire in both Prometheus servers and reach
  Alertmanager as one alert, notified once.

Everything binds 127.0.0.1, every wait is bounded, every server is stopped by the test.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from django_ratelimit.core import _get_window as ratelimit_window  # the window it counts in

from tests.e2e.events import ai_requests
from tests.e2e.servers import (
    ROOT,
    Alertmanager,
    Gunicorn,
    Prometheus,
    Site,
    VictoriaMetrics,
    postgres,
    redis,
)
from tests.servers import free_port, require, wait_until
from tests.utils import parse

DEPLOY = ROOT / "deploy"
# Two Prometheus servers scraping two hosts every 1.5 s: 80 scrapes a minute per host,
# 160 in all, with THROTTLE_RATE 120/m. A limit per token across hosts would refuse them.
INTERVAL = "1500ms"
NOW = datetime.now(UTC).replace(microsecond=0)


class Receiver(BaseHTTPRequestHandler):
    """Alertmanager's webhook: keeps each notification's JSON."""

    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, **json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Cluster:
    site: Site
    hosts: list[Gunicorn]
    prometheus: list[Prometheus]
    store: VictoriaMetrics
    alertmanager: Alertmanager
    notifications: list[dict]
    orchestrator: str
    scrape_token: str


def prometheus_config(
    replica: str, token_file: Path, targets: list[str], rules: Path, am: str, store: str
) -> dict:
    """deploy/prometheus/prometheus.yml as shipped, pointed at this test's servers: its
    external labels, alerting block (replica dropped) and scrape guards are kept; the
    VictoriaMetrics remote_write example is uncommented."""
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    config = yaml.safe_load(text)
    example = re.search(r"^# remote_write:\n((?:#   .*\n)+)", text, re.M)
    assert example, "the VictoriaMetrics remote_write example is missing"
    remote_write = yaml.safe_load("\n".join(line[2:] for line in example.group(1).splitlines()))
    remote_write[0]["url"] = store
    remote_write[0]["queue_config"] = {"batch_send_deadline": "1s"}  # the test's clock
    job = config["scrape_configs"][0]
    job.pop("scrape_interval")
    job["authorization"]["credentials_file"] = str(token_file)
    job["static_configs"] = [{"targets": targets}]
    config["global"].update(
        scrape_interval=INTERVAL, scrape_timeout=INTERVAL, evaluation_interval="1s"
    )
    config["global"]["external_labels"]["replica"] = replica
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [am]}]}]
    config["rule_files"] = [str(rules)]
    config["remote_write"] = remote_write
    return config


def fast_alerts(root: Path) -> Path:
    """The shipped alerts, with TammaTargetDown's 5 minutes cut to 3 seconds (the test's
    time budget); expressions, labels and annotations as shipped."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "tamma-alerts.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if rule.get("alert") == "TammaTargetDown":
                rule["for"] = "3s"
    path = root / "tamma-alerts.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def alertmanager_config(receiver_url: str) -> dict:
    """deploy/alertmanager/alertmanager.yml with its webhooks sent here and its waits cut
    to the test's time; grouping and inhibition as shipped."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="2s", group_interval="10m", repeat_interval="1h")
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = receiver_url + hook["url"].split("9095", 1)[1]
    return config


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    for binary in ("redis-server", "victoria-metrics", "prometheus-alertmanager", "prometheus"):
        require(binary)
    root = tmp_path_factory.mktemp("two-hosts")
    Receiver.received = []
    webhook = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    try:
        with (
            postgres() as database,
            redis(root / "redis") as cache,
            VictoriaMetrics(root / "victoria-metrics") as store,
            Alertmanager(
                root / "alertmanager",
                alertmanager_config(f"http://127.0.0.1:{webhook.server_port}"),
            ) as alertmanager,
        ):
            site = Site.create(root / "site", DATABASE_URL=database.url, CACHE_URL=cache.url)
            scrape_token = site.token("prom", "prometheus")
            orchestrator = site.token("tamma", "orchestrator")
            second_folder = root / "site" / "host-b-multiproc"
            second_folder.mkdir()
            with (
                Gunicorn(site, workers=3) as host_a,
                Gunicorn(
                    site, workers=3, env={"PROMETHEUS_MULTIPROC_DIR": str(second_folder)}
                ) as host_b,
            ):
                token_file = root / "tamma.token"
                token_file.write_text(scrape_token)
                rules = fast_alerts(root)
                targets = [host_a.address, host_b.address]
                pair = [
                    Prometheus(
                        root / replica,
                        [],  # the shipped job, below
                        config=prometheus_config(
                            replica, token_file, targets, rules, alertmanager.address,
                            store.write_url,
                        ),
                    )
                    for replica in ("prometheus-1", "prometheus-2")
                ]  # fmt: skip
                with pair[0], pair[1]:
                    for prometheus in pair:
                        prometheus.wait_for('sum(up{job="tamma"})', 2)
                    yield Cluster(
                        site,
                        [host_a, host_b],
                        pair,
                        store,
                        alertmanager,
                        Receiver.received,
                        orchestrator,
                        scrape_token,
                    )
    finally:
        webhook.shutdown()
        webhook.server_close()


def at(minutes: float) -> str:
    return (NOW - timedelta(hours=2) + timedelta(minutes=minutes)).isoformat()


def issue(n: int, status: str, minutes: float) -> dict:
    item = {
        "platform": "github",
        "repository": "acme/two-hosts",
        "external_id": f"TH-{n}",
        "issue_type": "bug",
        "priority": "high" if n % 2 else "low",
        "provider": "anthropic",
        "status": status,
        "created_at": at(0),
        "observed_at": at(minutes),
    }
    if status != "queued":
        item["started_at"] = at(1)
    if status in ("succeeded", "failed"):
        item["completed_at"] = at(minutes)
    return item


def post(host: Gunicorn, token: str, path: str, payload: dict) -> dict:
    answer = host.post_json(path, token, payload)
    assert answer.status in (200, 201), answer.text
    return json.loads(answer.body)


def test_counters_across_hosts_equal_the_rows_and_what_was_acknowledged(cluster: Cluster):
    a, b = cluster.hosts
    token = cluster.orchestrator
    # 60 issues queued, half through each host; then 24 finish (16 succeeded, 8 failed)
    # and 6 start, each change sent through the host that did not create the issue.
    for start in range(0, 60, 10):
        host = (a, b)[start // 10 % 2]
        items = [issue(n, "queued", 0) for n in range(start, start + 10)]
        results = post(host, token, "/api/v1/issues", {"items": items})["results"]
        assert [r["status"] for r in results] == ["created"] * 10
    changes = [issue(n, "succeeded" if n % 3 else "failed", 30) for n in range(24)]
    changes += [issue(n, "in_progress", 20) for n in range(24, 30)]
    for start in range(0, 30, 5):
        host = (b, a)[start // 10 % 2]
        results = post(host, token, "/api/v1/issues", {"items": changes[start : start + 5]})
        assert [r["status"] for r in results["results"]] == ["updated"] * 5
    # 200 AI requests reported as events, in batches alternating between the hosts.
    acknowledged = 0
    for batch in range(8):
        events = ai_requests("two-hosts", batch * 25, 25)
        acknowledged += post((a, b)[batch % 2], token, "/api/v1/events", {"events": events})[
            "counted"
        ]
    assert acknowledged == 200

    processed = cluster.site.sql(
        "SELECT COUNT(*) FROM tamma_metrics_issue WHERE status IN ('succeeded', 'failed')"
    )
    failed = cluster.site.sql("SELECT COUNT(*) FROM tamma_metrics_issue WHERE status = 'failed'")
    assert (processed, failed) == (24, 8)
    # Each host counted a part, and its own /metrics shows only its part.
    parts = [
        parse(host.get("/metrics", cluster.scrape_token).text).total("tamma_issues_processed_total")
        for host in (a, b)
    ]
    assert sum(parts) == processed and all(parts)
    store = cluster.store
    expected = {
        'sum without(instance, outcome) (tamma_issues_processed_total{job="tamma"})': processed,
        'sum without(instance) (tamma_issues_processed_total{outcome="failure"})': failed,
        'sum without(instance) (tamma_ai_requests_total{model="two-hosts"})': acknowledged,
        'sum without(instance) (tamma_ai_tokens_total{model="two-hosts",token_type="input"})': (
            800 * acknowledged
        ),
    }
    for expr, value in expected.items():
        wait_until(lambda e=expr: store.value(e), lambda v, x=value: v == x, what=expr)
    # One series per host in the store: the pair's copies are one (replica dropped on write).
    raw = store.query('tamma_ai_requests_total{model="two-hosts"}')
    assert sorted(s["metric"]["instance"] for s in raw) == sorted([a.address, b.address])
    assert all("replica" not in s["metric"] and s["metric"]["cluster"] == "tamma" for s in raw)


def test_database_gauges_are_counted_once(cluster: Cluster):
    queued = cluster.site.sql("SELECT COUNT(*) FROM tamma_metrics_issue WHERE status = 'queued'")
    assert queued == 30
    store = cluster.store
    one = 'max without(instance) (tamma_queue_depth{job="tamma",queue_type="issues"})'
    wait_until(
        lambda: sum(float(s["value"][1]) for s in store.query(one)),
        lambda total: total == queued,
        what="queue depth",
    )
    # Every host serves the same rows: summing over the hosts would count them twice.
    both = 'sum without(instance) (tamma_queue_depth{job="tamma",queue_type="issues"})'
    assert sum(float(s["value"][1]) for s in store.query(both)) == 2 * queued


def test_the_scrape_token_is_never_refused_on_any_host(cluster: Cluster):
    """The pair scrapes the two hosts 160 times a minute in all, with THROTTLE_RATE 120/m:
    a limit per token across hosts would refuse some of any 150 scrapes in a row; the
    limit per host refuses none."""

    def scrapes(status: str) -> float:
        return sum(
            parse(host.get("/metrics", cluster.scrape_token).text).total(
                "tamma_api_response_duration_seconds_count",
                endpoint="tamma_metrics:metrics",
                status_code=status,
            )
            for host in cluster.hosts
        )

    wait_until(lambda: scrapes("200"), lambda n: n >= 150, timeout=120, what="150 scrapes")
    assert scrapes("429") == 0
    for prometheus in cluster.prometheus:
        assert {s["value"][1] for s in prometheus.query('up{job="tamma"}')} == {"1"}


def test_a_permission_change_and_a_revocation_apply_on_every_host(cluster: Cluster):
    a, b = cluster.hosts
    token = cluster.site.token("pm", "product-manager")
    family = "tamma_issues_processed_total"
    assert family in parse(b.get("/metrics", token).text).names()  # host B's part
    # Taken away on host A's side (the admin's code path: guardian and the signals).
    cluster.site.shell(
        "from django.contrib.auth.models import Group\n"
        "from guardian.shortcuts import remove_perm\n"
        "from tamma_metrics.models import MetricFamily\n"
        "remove_perm('view_metricfamily', Group.objects.get(name='product-manager'),\n"
        "            MetricFamily.objects.get(name='issues_processed_total'))\n"
    )
    seen = parse(b.get("/metrics", token).text)
    assert family not in seen.names() and "tamma_pending_approvals" in seen.names()
    cluster.site.shell(
        "from django.utils import timezone\n"
        "from tamma_metrics.models import ApiToken\n"
        "ApiToken.objects.filter(user__username='pm').update(revoked_at=timezone.now())\n"
    )
    assert [host.get("/metrics", token).status for host in (a, b)] == [401, 401]


def test_the_report_cache_is_shared(cluster: Cluster):
    a, b = cluster.hosts
    token = cluster.site.token("ops-reports", "operator")

    def completed(host: Gunicorn) -> int:
        answer = host.get("/api/v1/velocity?days=7", token)
        assert answer.status == 200, answer.text
        return json.loads(answer.body)["totals"]["completed"]

    first = completed(a)
    assert first == 24
    results = post(
        b, cluster.orchestrator, "/api/v1/issues", {"items": [issue(29, "succeeded", 40)]}
    )
    assert results["results"][0]["status"] == "updated"
    # Host B answers from the report host A computed (REPORTS_CACHE_SECONDS, 60 s).
    assert completed(b) == first


def status_from(client_ip: str, host: Gunicorn, headers: dict[str, str]) -> int:
    """GET /metrics on ``host`` from another loopback address (another client IP)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", host.port, timeout=30, source_address=(client_ip, 0)
    )
    try:
        connection.request("GET", "/metrics", headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_failed_logins_count_across_hosts(cluster: Cluster):
    """FAILED_AUTH_RATE (10/m per IP) holds for all hosts together."""
    wrong = {"Authorization": "Basic " + base64.b64encode(b"prom:wrong").decode()}
    # django-ratelimit counts in fixed 60 s windows, offset per address: take the loopback
    # address (no other test uses them) whose window has the most time left, so the 12
    # attempts (a password hash each) fall in one window even on a loaded machine.
    ip = max((f"127.0.0.{n}" for n in range(9, 250)), key=lambda a: ratelimit_window(a, 60))
    assert ratelimit_window(ip, 60) - time.time() >= 50
    codes = [status_from(ip, host, wrong) for host in cluster.hosts * 5]
    assert codes == [401] * 10
    assert [status_from(ip, host, wrong) for host in cluster.hosts] == [429, 429]
    # The scraper's token still works from the same address.
    bearer = {"Authorization": f"Bearer {cluster.scrape_token}"}
    assert [status_from(ip, host, bearer) for host in cluster.hosts] == [200, 200]


def test_a_host_down_fires_one_alert_notified_once(cluster: Cluster):
    a, b = cluster.hosts
    down = b.address
    b.stop()
    for prometheus in cluster.prometheus:
        prometheus.wait_for(
            f'count(ALERTS{{alertname="TammaTargetDown",alertstate="firing",instance="{down}"}})',
            1,
        )
    alertmanager = cluster.alertmanager
    held = wait_until(
        lambda: alertmanager.alerts(alertname="TammaTargetDown"),
        lambda alerts: len(alerts) >= 1,
        what="TammaTargetDown in Alertmanager",
    )
    notified = wait_until(
        lambda: [
            n for n in cluster.notifications if n["groupLabels"]["alertname"] == "TammaTargetDown"
        ],
        what="a notification",
    )
    # Both Prometheus servers sent it; without `replica` they are one alert.
    assert len(held) == 1 and "replica" not in held[0]["labels"]
    assert held[0]["labels"]["instance"] == down
    assert held[0]["labels"]["cluster"] == "tamma"
    assert len(notified) == 1
    assert notified[0]["path"] == "/alerts/operators"
    assert notified[0]["status"] == "firing"
    assert [alert["labels"]["instance"] for alert in notified[0]["alerts"]] == [down]
    # The other host is still up and scraped.
    assert {
        s["metric"]["instance"]: s["value"][1]
        for s in cluster.prometheus[0].query('up{job="tamma"}')
    } == {a.address: "1", down: "0"}

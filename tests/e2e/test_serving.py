"""Production serving end to end: gunicorn (3 workers, recycled every few dozen requests,
a metrics port) on a SQLite file, management commands sharing its multiprocess folder,
and a real Prometheus scraping it every second. Every figure is checked exactly against
the database or against the requests the test made."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from tamma_metrics import catalogue, views
from tests.e2e.servers import (
    GUNICORN,
    PROMTOOL,
    ROOT,
    TEXT_0_0_4,
    Gunicorn,
    Prometheus,
    ScrapeJob,
    Site,
)
from tests.servers import free_port, wait_until
from tests.utils import Samples, parse

WORKERS = 3
MAX_REQUESTS, JITTER = 40, 10
# A file left by a "previous run": on_starting must delete it before any worker starts.
STALE_FILE = "counter_424242.db"
HEALTH_COUNT = "tamma_api_response_duration_seconds_count"
HEALTH = {"endpoint": "tamma_metrics:health"}
# Series Prometheus adds to every job.
SYNTHETIC = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_post_metric_relabeling",
    "scrape_samples_scraped",
    "scrape_series_added",
}

TRANSITIONS = """
from tamma_metrics.models import Issue
moved = 0
for issue in Issue.objects.filter(status__in=["queued", "in_progress"]).order_by("pk")[:20]:
    issue.status = "failed" if moved % 3 == 0 else "succeeded"
    issue.save()  # post_save counts the transition, in this process
    moved += 1
print(moved)
"""

NEW_APPROVALS = """
from tamma_metrics.models import Approval, Issue
for number, issue in enumerate(Issue.objects.order_by("pk")[:7]):
    Approval.objects.create(
        issue=issue, approval_type=["plan", "merge", "deployment"][number % 3], priority="high"
    )
print(Approval.objects.filter(status="pending").count())
"""


@pytest.fixture(scope="module")
def gunicorn_server(e2e_site: Site) -> Iterator[Gunicorn]:
    stale = MmapedDict(str(e2e_site.multiproc_dir / STALE_FILE))
    labels = {"provider": "x", "platform": "x", "issue_type": "x", "outcome": "success"}
    stale.write_value(
        mmap_key(
            "tamma_issues_processed",
            "tamma_issues_processed_total",
            list(labels),
            list(labels.values()),
            "h",
        ),
        1000.0,
        0.0,
    )
    stale.close()
    server = Gunicorn(
        e2e_site,
        workers=WORKERS,
        metrics_port=True,
        max_requests=MAX_REQUESTS,
        max_requests_jitter=JITTER,
        access_log=True,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def pm_token(e2e_site: Site) -> str:
    return e2e_site.token("pm", "product-manager")


@pytest.fixture(scope="module")
def reader_token(e2e_site: Site, scrape_token: str) -> str:
    """The prometheus user's second token: its own throttle budget for the test's scrapes."""
    return e2e_site.token("prom")


@pytest.fixture(scope="module")
def prometheus_server(
    tmp_path_factory: pytest.TempPathFactory,
    gunicorn_server: Gunicorn,
    scrape_token: str,
    pm_token: str,
) -> Iterator[Prometheus]:
    jobs = [
        ScrapeJob("tamma", gunicorn_server.metrics_address, scrape_token),  # the metrics port
        ScrapeJob("tamma-pm", gunicorn_server.address, pm_token),
    ]
    with Prometheus(tmp_path_factory.mktemp("prometheus"), jobs) as prometheus:
        prometheus.wait_for('sum(up{job=~"tamma|tamma-pm"})', 2)
        yield prometheus


@pytest.fixture(scope="module")
def seeded(e2e_site: Site, gunicorn_server: Gunicorn) -> int:
    """Events from two other processes: seed_demo's bulk path and model transitions."""
    e2e_site.manage("seed_demo", "--issues", "300")
    return int(e2e_site.shell(TRANSITIONS))


def processed(site: Site, status: str | None = None) -> int:
    statuses = (status,) if status else ("succeeded", "failed", "timed_out")
    marks = ",".join("?" * len(statuses))
    return site.sql(
        f"SELECT COUNT(*) FROM tamma_metrics_issue WHERE status IN ({marks})", *statuses
    )


def scrape(server: Gunicorn, token: str, *names: str) -> Samples:
    query = "?" + urllib.parse.urlencode([("name[]", n) for n in names]) if names else ""
    response = server.get(f"/metrics{query}", token, headers={"Accept": TEXT_0_0_4})
    assert response.status == 200, response.text[:300]
    return parse(response.text)


def sample_families() -> dict[str, catalogue.Family]:
    """Exposed sample name -> catalogue family (histograms have three sample names)."""
    names = {}
    for family in catalogue.families():
        suffixes = (
            ("_bucket", "_sum", "_count") if family.kind is catalogue.Kind.HISTOGRAM else ("",)
        )
        for suffix in suffixes:
            names[family.full_name + suffix] = family
    return names


def names_in_job(prometheus: Prometheus, job: str) -> set[str]:
    return {
        r["metric"]["__name__"] for r in prometheus.query(f'count by (__name__) ({{job="{job}"}})')
    }


def test_events_of_commands_and_workers_reach_prometheus_exactly(
    e2e_site, seeded, gunicorn_server, prometheus_server, reader_token
):
    assert seeded == 20
    assert STALE_FILE not in e2e_site.metric_files()  # emptied at start: no old counts
    truth = processed(e2e_site)
    assert truth > 300 // 3
    prometheus_server.wait_for('sum(tamma_issues_processed_total{job="tamma"})', truth)
    for outcome, status in (
        ("success", "succeeded"),
        ("failure", "failed"),
        ("timeout", "timed_out"),
    ):
        assert prometheus_server.value(
            f'sum(tamma_issues_processed_total{{job="tamma",outcome="{outcome}"}})'
        ) == processed(e2e_site, status)
    prs = e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_pullrequest")
    assert prometheus_server.value('sum(tamma_prs_created_total{job="tamma"})') == prs

    # Requests are events too: each worker records its own; the scrape adds them up.
    before = scrape(gunicorn_server, reader_token, HEALTH_COUNT).total(HEALTH_COUNT, **HEALTH)
    served_before = sum(gunicorn_server.answered_by("/metrics/health").values())
    for _ in range(60):
        assert gunicorn_server.get("/metrics/health").status == 200
    per_worker = wait_until(
        lambda: gunicorn_server.answered_by("/metrics/health"),
        lambda counts: sum(counts.values()) == served_before + 60,
        what="60 access log lines",
    )
    assert len([pid for pid, count in per_worker.items() if count]) >= 2  # spread out
    after = scrape(gunicorn_server, reader_token, HEALTH_COUNT).total(HEALTH_COUNT, **HEALTH)
    assert after == before + 60
    prometheus_server.wait_for(
        'sum(tamma_api_response_duration_seconds_count{job="tamma",endpoint="tamma_metrics:health"})',
        after,
    )


def test_pending_approvals_follow_the_database_within_two_scrapes(
    e2e_site, seeded, prometheus_server
):
    gauge = 'sum(tamma_pending_approvals{job="tamma"})'
    prometheus_server.wait_for(
        gauge, e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_approval WHERE status = 'pending'")
    )
    pending = int(e2e_site.shell(NEW_APPROVALS))
    changed_at = time.time()

    def scrapes_since() -> dict[float, float]:
        """Scrape timestamp -> summed gauge, for scrapes that started after the change."""
        totals: dict[float, float] = collections.defaultdict(float)
        for series in prometheus_server.query('tamma_pending_approvals{job="tamma"}[30s]'):
            for stamp, value in series["values"]:
                if stamp > changed_at:
                    totals[stamp] += float(value)
        return dict(totals)

    seen = wait_until(scrapes_since, lambda s: len(s) >= 3, what="three scrapes after the change")
    # The gauge follows within two scrapes: workers and an HA pair may share a value
    # computed up to one scrape timeout earlier, so only the first scrape after the
    # change may still show the old figure; every later one shows the new rows.
    values = [seen[stamp] for stamp in sorted(seen)]
    assert values[1:] == [pending] * (len(values) - 1)
    assert prometheus_server.value(gauge) == pending


def test_promtool_accepts_the_served_text(gunicorn_server, reader_token, seeded):
    response = gunicorn_server.get("/metrics", reader_token, headers={"Accept": TEXT_0_0_4})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=response.body, capture_output=True, timeout=60
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert "tamma_issues_processed_total{" in response.text


def test_a_role_sees_only_its_families_in_prometheus(prometheus_server, seeded):
    families = sample_families()

    def business(name: str) -> bool:
        family = families.get(name)
        return family is not None and family.audience is catalogue.Audience.BUSINESS

    def both() -> tuple[set[str], set[str]]:
        return names_in_job(prometheus_server, "tamma"), names_in_job(prometheus_server, "tamma-pm")

    everything, product = wait_until(
        both,
        lambda names: names[1] == {n for n in names[0] if business(n)} | SYNTHETIC,
        what="tamma-pm to show the business families of tamma",
    )
    assert everything >= SYNTHETIC
    assert {"tamma_issues_processed_total", "tamma_pending_approvals"} <= product
    assert {
        "tamma_queue_depth",
        "tamma_ai_requests_total",
        "process_cpu_seconds_total",
    } <= everything
    assert (
        not {"tamma_queue_depth", "tamma_ai_requests_total", "process_cpu_seconds_total"} & product
    )


def test_the_metrics_port_serves_only_metrics(gunicorn_server, prometheus_server, reader_token):
    # Prometheus's job "tamma" scrapes the metrics port.
    up = f'up{{job="tamma",instance="{gunicorn_server.metrics_address}"}}'
    assert prometheus_server.value(up) == 1
    on_port = {"metrics_port": True}
    assert gunicorn_server.get("/metrics", reader_token, **on_port).status == 200
    assert gunicorn_server.get("/metrics", **on_port).status == 401  # same auth
    health = gunicorn_server.get("/metrics/health", **on_port)
    assert health.status == 200
    assert json.loads(health.text) == {
        "status": "ok",
        "covers": views.HEALTH_COVERS.format(page="/reports/health/", api="/api/v1/health"),
        "database": {"reachable": True},
    }
    for path in ("/", "/admin/", "/admin/login/", "/metrics/"):
        response = gunicorn_server.get(path, **on_port)
        assert response.status == 404, path
        assert response.text == "Not found: this port serves /metrics only.\n"
    admin = gunicorn_server.get("/admin/")  # the main port is unchanged
    assert (admin.status, admin.headers["Location"]) == (302, "/admin/login/?next=/admin/")


def test_broken_files_in_the_folder_are_skipped_not_fatal(e2e_site, prometheus_server):
    folder = e2e_site.multiproc_dir
    broken = [folder / "junk.db", folder / "counter_99999998.db"]
    broken[0].write_text("not a metrics file")
    broken[1].write_bytes(b"")
    skipped = 'tamma_metrics_multiprocess_skipped_files{job="tamma"}'
    try:
        prometheus_server.wait_for(skipped, 2)
        assert prometheus_server.value('up{job="tamma"}') == 1
    finally:
        for path in broken:
            path.unlink()
    prometheus_server.wait_for(skipped, 0)


def test_worker_churn_and_kill_9_lose_no_count_and_keep_the_folder_small(
    e2e_site, seeded, gunicorn_server, prometheus_server, reader_token
):
    before = scrape(gunicorn_server, reader_token, HEALTH_COUNT).total(HEALTH_COUNT, **HEALTH)
    requests, killed, seen = 240, [], set(gunicorn_server.worker_pids())
    scrape_seconds, files_read = [], []
    for number in range(requests):
        if number in (80, 160):
            # Between two of our requests: the victim has none of ours in flight.
            victim = gunicorn_server.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            wait_until(
                gunicorn_server.worker_pids,
                lambda pids, v=victim: v not in pids and len(pids) == WORKERS,
                what=f"a new worker for {victim}",
            )
        assert gunicorn_server.get("/metrics/health").status == 200
        if number % 10 == 0:
            start = time.perf_counter()
            samples = scrape(gunicorn_server, reader_token)
            scrape_seconds.append(time.perf_counter() - start)
            files_read.append(samples.value("tamma_metrics_multiprocess_files"))
            seen.update(gunicorn_server.worker_pids())
    seen.update(gunicorn_server.worker_pids())
    expected = before + requests

    assert (
        scrape(gunicorn_server, reader_token, HEALTH_COUNT).total(HEALTH_COUNT, **HEALTH)
        == expected
    )
    prometheus_server.wait_for(
        'sum(tamma_api_response_duration_seconds_count{job="tamma",endpoint="tamma_metrics:health"})',
        expected,
    )
    assert prometheus_server.value('sum(tamma_issues_processed_total{job="tamma"})') == processed(
        e2e_site
    )
    # resets() drops the name, so one query per counter family.
    counters = '{job=~"tamma|tamma-pm",__name__=~"(tamma|django_http)_.+_(total|count)"}'
    names = {
        r["metric"]["__name__"]
        for r in prometheus_server.query(f"count by (__name__) ({counters})")
    }
    assert len(names) > 10  # the check below is not vacuous
    resets = {
        name: prometheus_server.value(f'sum(resets({name}{{job=~"tamma|tamma-pm"}}[5m]))')
        for name in names
    }
    assert resets == dict.fromkeys(names, 0.0)
    assert len(seen) >= WORKERS + len(killed) + 2, seen  # workers really came and went

    # Only live workers, the commands that ran, and one archive per type have files.
    commands = {str(pid) for pid in e2e_site.command_pids}

    def folder() -> tuple[list[str], set[str]]:
        live = {str(pid) for pid in gunicorn_server.worker_pids()}
        return e2e_site.metric_files(), live

    def settled(state: tuple[list[str], set[str]]) -> bool:
        files, live = state
        return {f.rsplit("_", 1)[1][:-3] for f in files} <= live | commands | {"archive"}

    files, live = wait_until(folder, settled, what="only live workers' files")
    of_workers = [f for f in files if f.rsplit("_", 1)[1][:-3] in live]
    of_commands = [f for f in files if f.rsplit("_", 1)[1][:-3] in commands]
    assert sorted(f for f in files if f.endswith("_archive.db")) == [
        "counter_archive.db",
        "histogram_archive.db",
    ]
    assert len(of_workers) <= 2 * WORKERS  # a counter and a histogram file each
    assert len(files) <= 2 * WORKERS + 2 + len(of_commands)
    assert not any(f.rsplit("_", 1)[1][:-3] in {str(p) for p in killed} for f in files)
    assert max(files_read) <= 2 * WORKERS + 2 + len(of_commands)
    median = sorted(scrape_seconds)[len(scrape_seconds) // 2]
    print(
        f"\nchurn: {len(seen)} worker pids, scrape p50 {median:.3f}s "
        f"max {max(scrape_seconds):.3f}s, files read per scrape max {max(files_read):.0f}, "
        f"folder now {len(files)} files ({len(of_commands)} of commands)"
    )


def test_gunicorn_refuses_to_start_without_a_usable_folder(e2e_site, tmp_path: Path):
    (tmp_path / "a-file").write_text("")
    missing, a_file = str(tmp_path / "missing"), str(tmp_path / "a-file")
    cases = {
        None: "PROMETHEUS_MULTIPROC_DIR is not set: set it to an existing, writable folder",
        "": "PROMETHEUS_MULTIPROC_DIR is set but empty: prometheus_client then writes its",
        missing: f"PROMETHEUS_MULTIPROC_DIR={missing!r} does not exist.",
        a_file: f"PROMETHEUS_MULTIPROC_DIR={a_file!r} is not a folder.",
    }
    for folder, message in cases.items():
        env = {k: v for k, v in e2e_site.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env["PORT"] = str(free_port())
        if folder is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = folder
        done = subprocess.run(
            [GUNICORN, "-c", "project/gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert f"Cannot start: {message}" in done.stderr

"""The state API through three gunicorn workers: the same items posted by six senders at
the same moment land on different workers, each worker with its own database connection
to one SQLite file, and each change is written and counted once, in the rows, in
/metrics (summed over the workers) and in Prometheus.
"""

from __future__ import annotations

import collections
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.servers import Gunicorn, Site
from tests.utils import parse

SENDERS = 6
BATCH = 10
NOW = datetime.now(UTC).replace(microsecond=0)
PROCESSED = "tamma_issues_processed_total"


@pytest.fixture(scope="module")
def gunicorn_server(e2e_site: Site) -> Iterator[Gunicorn]:
    with Gunicorn(e2e_site, workers=3, access_log=True) as server:
        yield server


@pytest.fixture(scope="module")
def tamma_token(e2e_site: Site) -> str:
    return e2e_site.token("tamma", "orchestrator")


def at(minutes: float) -> str:
    return (NOW - timedelta(hours=3) + timedelta(minutes=minutes)).isoformat()


def issue(external_id: str, status: str, minutes: float) -> dict:
    item = {
        "platform": "gitlab",
        "repository": "acme/workers",
        "external_id": external_id,
        "issue_type": "feature",
        "provider": "google",
        "status": status,
        "created_at": at(0),
        "observed_at": at(minutes),
    }
    if status != "queued":
        item["started_at"] = at(1)
    return item


def together(server: Gunicorn, token: str, path: str, items: list[dict]) -> collections.Counter:
    """Every sender posts all of ``items`` (in its own order, in batches) at the same
    moment; how the items were answered, over all senders."""
    barrier = threading.Barrier(SENDERS)
    answers: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def send(seed: int) -> None:
        mine = items[:]
        random.Random(seed).shuffle(mine)
        barrier.wait(timeout=60)
        for start in range(0, len(mine), BATCH):
            response = server.post_json(f"/api/v1/{path}", token, {"items": mine[start:][:BATCH]})
            with lock:
                if response.status not in (200, 201):
                    failures.append(f"{response.status} {response.text[:300]}")
                    continue
                answers.update(r["status"] for r in json.loads(response.body)["results"])

    threads = [threading.Thread(target=send, args=(seed,)) for seed in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert failures == []
    return answers


def test_the_same_changes_from_six_senders_count_once(
    e2e_site, gunicorn_server, prometheus_server, tamma_token, scrape_token
):
    ids = [str(n) for n in range(60)]
    # Created by all six at once, all still in progress.
    created = together(
        gunicorn_server, tamma_token, "issues", [issue(i, "in_progress", 5) for i in ids]
    )
    assert created == {"created": 60, "unchanged": 60 * (SENDERS - 1)}
    # Then each ends, again from all six at once: two out of three succeed.
    ends = [issue(i, "succeeded" if int(i) % 3 else "failed", 65) for i in ids]
    ended = together(gunicorn_server, tamma_token, "issues", ends)
    assert ended == {"updated": 60, "unchanged": 60 * (SENDERS - 1)}
    workers = gunicorn_server.answered_by("/api/v1/issues")
    assert len([pid for pid, n in workers.items() if n]) >= 2  # spread over the workers

    succeeded = e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_issue WHERE status = 'succeeded'")
    failed = e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_issue WHERE status = 'failed'")
    assert (succeeded, failed) == (40, 20)
    assert e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_issue") == 60

    answer = gunicorn_server.get("/metrics", scrape_token)
    samples = parse(answer.text)
    labels = {"provider": "google", "platform": "gitlab", "issue_type": "feature"}
    assert samples.value(PROCESSED, **labels, outcome="success") == 40
    assert samples.value(PROCESSED, **labels, outcome="failure") == 20
    assert samples.total(PROCESSED) == 60
    duration = "tamma_issue_completion_duration_seconds"
    assert samples.total(f"{duration}_count") == 60
    assert samples.total(f"{duration}_sum") == 60 * 64 * 60
    prometheus_server.wait_for(f'sum({PROCESSED}{{job="tamma",outcome="success"}})', 40)
    prometheus_server.wait_for(f'sum({PROCESSED}{{job="tamma",outcome="failure"}})', 20)


def test_an_escalation_and_a_merge_from_six_senders_count_once(
    e2e_site, gunicorn_server, prometheus_server, tamma_token, scrape_token
):
    escalations = [
        {
            "external_id": f"esc-{n}",
            "platform": "gitlab",
            "repository": "acme/workers",
            "issue_external_id": str(n),
            "escalation_type": "blocked",
            "severity": "high",
            "component": "ci",
            "reason": "flaky_tests",
            "observed_at": at(30),
        }
        for n in range(20)
    ]
    raised = together(gunicorn_server, tamma_token, "escalations", escalations)
    assert raised == {"created": 20, "unchanged": 20 * (SENDERS - 1)}
    merges = [
        {
            "platform": "gitlab",
            "repository": "acme/workers",
            "number": 500 + n,
            "issue_external_id": str(n),
            "status": "merged",
            "merge_strategy": "squash",
            "created_at": at(20),
            "merged_at": at(60),
            "observed_at": at(60),
        }
        for n in range(20)
    ]
    merged = together(gunicorn_server, tamma_token, "pull-requests", merges)
    assert merged == {"created": 20, "unchanged": 20 * (SENDERS - 1)}

    assert e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_escalation") == 20
    assert (
        e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_pullrequest WHERE status = 'merged'") == 20
    )
    answer = gunicorn_server.get("/metrics", scrape_token)
    samples = parse(answer.text)
    assert samples.total("tamma_escalations_total", component="ci", reason="flaky_tests") == 20
    assert samples.total("tamma_prs_created_total", platform="gitlab") == 20
    assert samples.total("tamma_prs_merged_total", merge_strategy="squash") == 20
    prometheus_server.wait_for('sum(tamma_escalations_total{job="tamma"})', 20)
    prometheus_server.wait_for('sum(tamma_prs_merged_total{job="tamma"})', 20)

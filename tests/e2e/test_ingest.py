"""The ingest API against real gunicorn workers and a real Prometheus.

3,000 events through the API, spread over three workers, plus model transitions from a
management command sharing the folder: Prometheus's sums equal the events sent and the
database's truth. Retries of the same event_id that land on different workers count once.
"""

from __future__ import annotations

import collections
import http.client
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.events import ai_request
from tests.e2e.servers import Gunicorn, Site

WORKERS = 3
BATCH = 100


@pytest.fixture(scope="module")
def gunicorn_server(e2e_site: Site) -> Iterator[Gunicorn]:
    with Gunicorn(e2e_site, workers=WORKERS, access_log=True) as server:
        yield server


@pytest.fixture(scope="module")
def worker_token(e2e_site: Site) -> str:
    return e2e_site.token("worker-1", "worker")


def post(server: Gunicorn, token: str, events: list[dict]) -> dict:
    response = server.post_json("/api/v1/events", token, {"events": events})
    assert response.status == 200, response.text
    return json.loads(response.body)


def post_all(server: Gunicorn, token: str, batches: list[list[dict]]) -> list[dict]:
    """Send batches from 6 threads at once: gunicorn's workers take them as they come."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(lambda batch: post(server, token, batch), batches))


def test_3000_events_through_the_api_equal_prometheus_and_the_database(
    e2e_site, gunicorn_server, prometheus_server, worker_token
):
    events = [
        ai_request(f"load-{n:05d}", "e2e-load", ["anthropic", "openai", "google"][n % 3])
        for n in range(3000)
    ]
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    answers = post_all(gunicorn_server, worker_token, batches)
    assert sum(answer["counted"] for answer in answers) == 3000
    assert len(gunicorn_server.answered_by("/api/v1/events")) >= 2

    e2e_site.manage("seed_demo", "--issues", "90")  # model events from another process

    stored = e2e_site.sql(
        "SELECT COUNT(*) FROM tamma_metrics_ingestedevent WHERE event_type = 'ai_request'"
    )
    assert stored == 3000
    # seed_demo records AI requests too: ours carry their own model name.
    ours = 'job="tamma",model="e2e-load"'
    prometheus_server.wait_for(f"sum(tamma_ai_requests_total{{{ours}}})", 3000)
    for provider in ("anthropic", "openai", "google"):
        query = f'sum(tamma_ai_requests_total{{{ours},provider="{provider}"}})'
        assert prometheus_server.value(query) == 1000
    tokens = f'sum(tamma_ai_tokens_total{{{ours},token_type="input"}})'
    assert prometheus_server.value(tokens) == 3000 * 800
    processed = e2e_site.sql(
        "SELECT COUNT(*) FROM tamma_metrics_issue "
        "WHERE status IN ('succeeded', 'failed', 'timed_out')"
    )
    prometheus_server.wait_for('sum(tamma_issues_processed_total{job="tamma"})', processed)


def test_retries_on_other_workers_count_once(
    e2e_site, gunicorn_server, prometheus_server, worker_token
):
    # seed_demo (the test above) records code changes too, and they may still be on their
    # way to Prometheus: ours carry a file type no other test records.
    ours = 'sum(tamma_code_changes_total{job="tamma",file_type="e2e-retry"})'
    events = [
        {
            "type": "code_change",
            "event_id": f"retry-{n:04d}",
            "change_type": "update",
            "language": "python",
            "actor": "system",
            "file_type": "e2e-retry",
        }
        for n in range(300)
    ]
    # Every event is sent three times, in different requests, at the same moment.
    batches = [events[i : i + 50] for i in range(0, 300, 50)] * 3
    answers = post_all(gunicorn_server, worker_token, batches)
    assert sum(answer["counted"] for answer in answers) == 300
    assert sum(answer["duplicates"] for answer in answers) == 600
    assert len(gunicorn_server.answered_by("/api/v1/events")) >= 2
    prometheus_server.wait_for(ours, 300)
    assert (
        e2e_site.sql(
            "SELECT COUNT(*) FROM tamma_metrics_ingestedevent WHERE event_id LIKE 'retry-%'"
        )
        == 300
    )


def test_a_chunked_body_is_refused_with_411_and_counts_nothing(
    e2e_site, gunicorn_server, worker_token
):
    """gunicorn decodes chunked bodies but Django reads by Content-Length: the body would
    arrive empty. The API says so (411) instead of answering that the type is missing."""
    body = json.dumps(ai_request("chunked-0001", "e2e-load")).encode()
    connection = http.client.HTTPConnection("127.0.0.1", gunicorn_server.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/v1/events")
        connection.putheader("Authorization", f"Bearer {worker_token}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        connection.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 411
    assert "Content-Length" in answer["detail"]
    count = "SELECT COUNT(*) FROM tamma_metrics_ingestedevent WHERE event_id = 'chunked-0001'"
    assert e2e_site.sql(count) == 0
    # The same event with a Content-Length is counted.
    assert (
        post(gunicorn_server, worker_token, [ai_request("chunked-0001", "e2e-load")])["counted"]
        == 1
    )


def test_three_workers_together_let_through_no_more_than_the_rate(e2e_site, gunicorn_server):
    """With the default per-process cache each worker takes its share of THROTTLE_RATE
    (120/m): however requests spread over the workers, at most 120 pass in a minute."""
    token = e2e_site.token("throttled-scraper", "prometheus")
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(
            pool.map(lambda _: gunicorn_server.get("/metrics", token).status, range(180))
        )
    passed = statuses.count(200)
    seen = collections.Counter(statuses)
    assert set(statuses) == {200, 429}, seen
    assert 40 <= passed <= 120, seen  # at least one worker's share; never more than the rate

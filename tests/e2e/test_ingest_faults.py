"""Ingest while gunicorn's workers are killed and its master is stopped: no event the
API acknowledged is lost, and none is counted twice.

Senders post batches of AI-request events from several threads, as Tamma's workers do;
a batch whose request failed is sent again with the same event ids, so the ids decide
what counts. The totals are read from /metrics (or from the multiprocess folder once
gunicorn is gone) and from the database, and compared with what the API answered.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.e2e.events import ai_requests
from tests.e2e.servers import Gunicorn, Site
from tests.servers import wait_until
from tests.utils import parse

WORKERS = 3
BATCH = 50
SENDERS = 6
REQUESTS = "tamma_ai_requests_total"


@dataclass
class Tally:
    """What the API answered, over every attempt of every batch."""

    counted: int = 0  # events answered "counted"
    acknowledged: set[str] = field(default_factory=set)  # ids answered counted or duplicate
    failed_attempts: int = 0  # requests cut or refused (no answer)
    answered_after: list[float] = field(default_factory=list)  # when each 200 arrived
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: dict) -> None:
        with self.lock:
            self.counted += body["counted"]
            self.answered_after.append(time.monotonic())
            for result in body["results"]:
                assert result["status"] in {"counted", "duplicate"}, result
                self.acknowledged.add(result["event_id"])


def stored(site: Site, model: str) -> int:
    return site.sql(
        "SELECT COUNT(*) FROM tamma_metrics_ingestedevent WHERE event_id LIKE ?", f"{model}-%"
    )


@pytest.fixture(scope="module")
def server(e2e_site: Site) -> Iterator[Gunicorn]:
    with Gunicorn(e2e_site, workers=WORKERS) as started:
        yield started


def test_workers_killed_with_sigkill_during_ingest_lose_no_acknowledged_event(e2e_site, server):
    token = e2e_site.token("kill-sender", "worker")
    reader = e2e_site.token("kill-reader", "prometheus")
    model, batches = "sigkill", 40
    tally, sending = Tally(), threading.Event()
    sending.set()

    def send(number: int) -> None:
        batch = ai_requests(model, number * BATCH, BATCH)
        for _ in range(20):  # a batch is retried until answered (bounded)
            try:
                response = server.post_json("/api/v1/events", token, {"events": batch})
            except OSError:  # the worker died with our request: send it again
                with tally.lock:
                    tally.failed_attempts += 1
                continue
            assert response.status == 200, (response.status, response.text)
            tally.add(json.loads(response.body))
            return
        raise AssertionError(f"batch {number} never answered")

    killed = []
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        done = pool.map(send, range(batches))
        # Kill a worker every 0.3 s while batches are in flight, until two requests were
        # cut (bounded: 12 kills). Each kill waits for gunicorn's replacement.
        while len(killed) < 12 and tally.failed_attempts < 2:
            time.sleep(0.3)
            victim = random.choice(server.worker_pids())
            os.kill(victim, 9)
            killed.append(victim)
            wait_until(
                server.worker_pids,
                lambda pids, v=victim: v not in pids and len(pids) == WORKERS,
                what=f"a worker in place of {victim}",
            )
        list(done)  # re-raises a sender's failure

    assert tally.failed_attempts >= 1, "no request was cut: the test proved nothing"
    every_id = {event["event_id"] for event in ai_requests(model, 0, batches * BATCH)}
    assert tally.acknowledged == every_id  # every event was answered in the end
    assert stored(e2e_site, model) == len(every_id)  # and its id stored once
    samples = parse(server.get("/metrics", reader, headers={"Accept": "text/plain"}).text)
    counted = samples.total(REQUESTS, model=model)
    # Every event answered "counted" is in /metrics, and no event counts twice (the id
    # is committed before the counters are written). The only loss possible is an event
    # whose worker died between those two steps: its retry is a "duplicate".
    assert tally.counted <= counted <= len(every_id)
    print(
        f"\nsigkill: {len(killed)} workers killed, {tally.failed_attempts} requests cut, "
        f"{len(every_id) - counted:.0f} of {len(every_id)} events lost in the kill window"
    )


def folder_total(site: Site, name: str, **labels: str) -> float:
    """The sum of a counter over the multiprocess folder, read as prometheus_client does."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(site.multiproc_dir))
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_a_master_stopped_with_sigterm_answers_every_request_it_took(tmp_path):
    """SIGTERM is gunicorn's graceful stop: listeners close, and every request a worker
    had taken is finished and answered before the worker exits. Nothing is stored or
    counted without an answer; the folder keeps every answered event."""
    site = Site.create(tmp_path / "site")  # its own folder: a new gunicorn empties it
    token = site.token("sigterm-sender", "worker")
    model, tally = "sigterm", Tally()
    numbers = itertools.count()
    server = Gunicorn(site, workers=WORKERS).start()
    refused: list[OSError] = []
    try:

        def send() -> None:
            while True:
                batch = ai_requests(model, next(numbers) * BATCH, BATCH)
                try:
                    response = server.post_json("/api/v1/events", token, {"events": batch})
                except OSError as error:  # the server is gone: this batch was never taken
                    refused.append(error)
                    return
                assert response.status == 200, (response.status, response.text)
                tally.add(json.loads(response.body))

        with ThreadPoolExecutor(max_workers=SENDERS) as pool:
            senders = [pool.submit(send) for _ in range(SENDERS)]
            wait_until(lambda: tally.counted, lambda n: n >= 20 * BATCH, what="ingest running")
            stopped_at = time.monotonic()
            os.kill(server.pid, 15)
            server.process.wait(timeout=60)
            for sender in senders:
                sender.result(timeout=60)
    finally:
        server.stop()

    assert server.process.returncode == 0, server.tail()
    assert len(refused) == SENDERS  # every sender ran until the server went away
    finished = [at for at in tally.answered_after if at > stopped_at]
    assert finished, "no request was in flight at the signal: the test proved nothing"
    assert tally.counted == len(tally.acknowledged)  # no retries here: no duplicates
    # What the database holds and what the folder counts equal what was answered.
    assert stored(site, model) == tally.counted
    assert folder_total(site, REQUESTS, model=model) == tally.counted
    print(
        f"\nsigterm: {tally.counted} events answered, {len(finished)} requests answered "
        f"after the signal, {len(refused)} senders refused"
    )

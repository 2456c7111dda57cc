"""A full multiprocess folder under gunicorn degrades, never kills.

gunicorn (3 workers, recycled every few dozen requests) serves a site whose
PROMETHEUS_MULTIPROC_DIR is a small tmpfs this module mounts. Events are recorded
(a management command, the ingest API, requests), then the tmpfs is filled to ENOSPC
while scrapes and ingest requests run: every request is answered, the master keeps
its pid while workers exit (their archive step fails and is undone) and new ones boot
on the full folder, and what was recorded before the fault is served exactly. With
room again, the archive step catches up and the folder says so.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.events import ai_requests
from tests.e2e.servers import TEXT_0_0_4, Gunicorn, Site
from tests.servers import wait_until
from tests.utils import Samples, fill, parse, tmpfs

WORKERS = 3
MAX_REQUESTS, JITTER = 20, 5
BEFORE = 200  # ai_request events ingested before the fault
DURING = 120  # requests (scrapes and ingest batches, alternating) while the folder fills
FILL_AFTER = 10  # of those, sent before the folder is filled
REQUESTS = 'tamma_ai_requests_total{model="before-fault"}'


@pytest.fixture(scope="module")
def e2e_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The site on a 24 MiB tmpfs folder (its commands and workers need about 6)."""
    root = tmp_path_factory.mktemp("site")
    with tmpfs(root / "prometheus-multiproc", "24m"):
        yield Site.create(root)


@pytest.fixture(scope="module")
def gunicorn_server(e2e_site: Site) -> Iterator[Gunicorn]:
    server = Gunicorn(
        e2e_site, workers=WORKERS, max_requests=MAX_REQUESTS, max_requests_jitter=JITTER
    )
    with server:
        yield server


def scrape(server: Gunicorn, token: str) -> Samples:
    response = server.get("/metrics", token, headers={"Accept": TEXT_0_0_4})
    assert response.status == 200, response.text[:300]
    return parse(response.text)


def ingest(server: Gunicorn, token: str, events: list[dict]) -> int:
    response = server.post_json("/api/v1/events", token, {"events": events})
    assert response.status == 200, response.text[:300]
    counted: int = json.loads(response.body)["counted"]
    return counted


def test_a_full_folder_answers_every_request_and_keeps_what_was_counted(
    e2e_site: Site, gunicorn_server: Gunicorn
):
    folder = e2e_site.multiproc_dir
    readers = itertools.cycle(e2e_site.tokens("reader", "prometheus", 6))  # under the throttle
    worker = e2e_site.token("sender", "worker")
    e2e_site.manage("seed_demo", "--issues", "60")  # model events from a command
    truth = e2e_site.sql(
        "SELECT COUNT(*) FROM tamma_metrics_issue"
        " WHERE status IN ('succeeded', 'failed', 'timed_out')"
    )
    for first in range(0, BEFORE, 50):
        assert ingest(gunicorn_server, worker, ai_requests("before-fault", first, 50)) == 50
    master, pids = gunicorn_server.pid, set(gunicorn_server.worker_pids())
    before = scrape(gunicorn_server, next(readers))
    assert before.total("tamma_ai_requests_total", model="before-fault") == BEFORE
    assert before.total("tamma_issues_processed_total") == truth > 0
    assert before.value("tamma_metrics_collector_up", collector="folder") == 1

    # Scrapes and ingest batches (each of new models: new series) from another thread;
    # the folder fills after the first few.
    answers: list[tuple[str, int | str, Samples | None]] = []
    filled = threading.Event()

    def traffic() -> None:
        for n in range(DURING):
            try:
                if n % 2:
                    answers.append(("ingest", ingest(gunicorn_server, worker, batch(n)), None))
                else:
                    after_fill = filled.is_set()  # before the request: it sees the fill
                    samples = scrape(gunicorn_server, next(readers))
                    answers.append(("scrape", 200 if after_fill else 0, samples))
            except (OSError, AssertionError) as exc:  # a reset connection, a 5xx
                answers.append(("failed", repr(exc), None))
            pids.update(gunicorn_server.worker_pids())

    def batch(n: int) -> list[dict]:
        return ai_requests(f"during-{n}", 0, 3)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_until(lambda: len(answers) >= FILL_AFTER, timeout=300, what=f"{FILL_AFTER} answers")
        filler = fill(folder)
        filled.set()
    finally:
        sender.join(timeout=600)
    assert not sender.is_alive()

    failed = [answer for answer in answers if answer[0] == "failed"]
    assert failed == []
    assert len(answers) == DURING
    assert [a[1] for a in answers if a[0] == "ingest"] == [3] * (DURING // 2)  # all taken
    during = [a[2] for a in answers if a[0] == "scrape" and a[1] == 200 and a[2] is not None]
    assert len(during) > DURING // 4
    for samples in during:  # what was counted before the fault, exactly, in every scrape
        assert samples.total("tamma_ai_requests_total", model="before-fault") == BEFORE
        assert samples.total("tamma_issues_processed_total") == truth
        assert samples.value("tamma_metrics_collector_up", collector="folder") == 0
    assert gunicorn_server.process.poll() is None and gunicorn_server.pid == master
    log = gunicorn_server.log.read_text(errors="replace")
    assert "SIGBUS" not in log and "Worker failed to boot" not in log
    assert len(pids) > WORKERS  # workers exited and were replaced during the fault
    assert "could not archive the files of process" in log  # and their archive was undone
    assert not [n for n in e2e_site.metric_files() if n.endswith((".tmp", ".merging"))]
    assert not [n for n in Path(folder).iterdir() if n.suffix in (".tmp", ".merging")]

    # Room again: the workers that booted on the full folder are recycled, the archive
    # step catches up, the counts are unchanged.
    filler.unlink()
    full_pids = set(gunicorn_server.worker_pids())

    later = itertools.count(DURING)

    def recycled() -> bool:
        for _ in range(10):
            assert ingest(gunicorn_server, worker, batch(next(later))) == 3
        return not full_pids & set(gunicorn_server.worker_pids())

    wait_until(recycled, timeout=300, what="every worker of the full folder recycled")
    commands = {str(pid) for pid in e2e_site.command_pids}

    def archived() -> bool:  # only live workers, commands and the archives own files
        owners = {name.rsplit("_", 1)[1][:-3] for name in e2e_site.metric_files()}
        return owners <= {str(p) for p in gunicorn_server.worker_pids()} | commands | {"archive"}

    wait_until(archived, timeout=300, what="the archive step to catch up")
    after = scrape(gunicorn_server, next(readers))
    assert after.total("tamma_ai_requests_total", model="before-fault") == BEFORE
    assert after.total("tamma_issues_processed_total") == truth
    assert after.value("tamma_metrics_collector_up", collector="folder") == 1
    lost = after.value("tamma_metrics_errors_total", stage="disk")
    sent = 3 * (next(later) - DURING) + 3 * (DURING // 2)
    recorded = sum(
        value
        for (name, labels), value in after.items()
        if name == "tamma_ai_requests_total" and dict(labels)["model"].startswith("during-")
    )
    assert gunicorn_server.pid == master
    undone = log.count("could not archive the files of process")
    print(
        f"\nfull folder: {len(answers)} requests answered during the fault "
        f"({len(during)} scrapes, each exact), {len(pids)} worker pids, {undone} archive "
        f"steps undone; of {sent} later events {recorded:.0f} served, {lost:.0f} counted "
        "as lost (the rest went to workers booted on the full folder, in memory)"
    )

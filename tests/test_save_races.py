"""Races on model saves: threads each hold a copy of one issue loaded before any of them
saves, then all save an end at the same moment; the transition is counted once.

As in test_state_concurrency, the threads run in another process on a real database of
this run (a SQLite file, or a fresh PostgreSQL database), each with its own connection.
"""

from __future__ import annotations

import json

import pytest

from tests.utils import parse, process_env, run_python

THREADS = 8

RACE = """
import json, sys, threading
import django
django.setup()
from django.db import connection, transaction
from django.test import Client
from tamma_metrics.models import Issue

ends, atomic = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# One request first: django_prometheus builds its metrics when the first handler loads
# the middleware, which threads doing it together would race on.
assert Client(HTTP_HOST="127.0.0.1").get("/metrics/health").status_code in (200, 503)
issue = Issue.objects.create(
    platform="github", repository="acme/race", external_id="1", issue_type="bug",
    provider="openai", status="in_progress",
)
barrier = threading.Barrier(len(ends))
errors = []


def run(status, in_atomic):
    try:
        copy = Issue.objects.get(pk=issue.pk)  # loaded before anyone saves
        barrier.wait(timeout=60)
        copy.status = status
        if in_atomic:
            with transaction.atomic():
                copy.save()
        else:
            copy.save()
    except Exception as error:
        errors.append(repr(error))
    finally:
        connection.close()


threads = [threading.Thread(target=run, args=args) for args in zip(ends, atomic)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=120)
print(json.dumps({
    "errors": errors,
    "status": Issue.objects.get(pk=issue.pk).status,
    "metrics": Client(HTTP_HOST="127.0.0.1").get("/metrics").content.decode(),
}))
"""

PROCESSED = "tamma_issues_processed_total"
OUTCOMES = {"succeeded": "success", "failed": "failure", "timed_out": "timeout"}


@pytest.fixture
def race(tmp_path, process_database_url):
    env = process_env(tmp_path, process_database_url)
    run_python("manage.py", "migrate", "-v0", env=env)

    def run(ends: list[str], atomic: list[bool]) -> dict:
        done = run_python("-c", RACE, json.dumps(ends), json.dumps(atomic), env=env)
        result = json.loads(done.stdout)
        result["metrics"] = parse(result["metrics"])
        return result

    return run


@pytest.mark.parametrize("atomic", [False, True], ids=["autocommit", "atomic"])
def test_stale_copies_saving_the_same_end_at_once_count_it_once(race, atomic):
    result = race(["succeeded"] * THREADS, [atomic] * THREADS)
    assert result["errors"] == []
    assert result["status"] == "succeeded"
    assert result["metrics"].total(PROCESSED, outcome="success") == 1
    assert result["metrics"].total(PROCESSED) == 1


def test_stale_copies_saving_different_ends_at_once_count_the_first_alone(race):
    """Whichever end is written first is the transition; the others correct it from one
    end to another, which counts nothing. The first is the one whose UPDATE found the row
    still in progress: not known in advance, so the test reads which outcome was counted
    and checks that it is one of the ends and the only count."""
    ends = ["succeeded", "failed", "timed_out", "succeeded"] * (THREADS // 4)
    result = race(ends, [n % 2 == 0 for n in range(THREADS)])
    assert result["errors"] == []
    assert result["status"] in OUTCOMES
    counted = {o: result["metrics"].total(PROCESSED, outcome=o) for o in OUTCOMES.values()}
    assert sorted(counted.values()) == [0, 0, 1]
    assert result["metrics"].total(PROCESSED) == 1

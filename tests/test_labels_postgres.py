"""PostgreSQL: the advisory lock per admission scope really serialises the last places.

Read committed lets two transactions each insert and count without seeing the other's
uncommitted row, so both could take the last place; ``pg_advisory_xact_lock`` makes
the second wait for the first to commit. SQLite serialises writers by itself.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import connection, transaction

from tamma_metrics import budget, labels
from tamma_metrics.models import Admission

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL run only"),
    pytest.mark.django_db(transaction=True),
]


def _other_connection() -> psycopg.Connection:
    params = connection.settings_dict
    return psycopg.connect(
        host=params["HOST"],
        port=params["PORT"],
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname=params["NAME"],
    )


def test_the_lock_is_held_until_the_transaction_ends():
    other = _other_connection()
    try:
        with transaction.atomic():
            labels._lock_scope("series:held")
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                )
                assert cursor.fetchone()[0] == 1
            taken = other.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", [labels.lock_key("series:held")]
            ).fetchone()[0]
            assert taken is False
            other.rollback()
        # Committed: released without an explicit unlock.
        taken = other.execute(
            "SELECT pg_try_advisory_xact_lock(%s)", [labels.lock_key("series:held")]
        ).fetchone()[0]
        assert taken is True
        other.rollback()
    finally:
        other.close()


def test_a_second_admission_waits_for_the_first_and_sees_the_cap_full():
    scope = "series:race"
    assert labels.admit(scope, "first", 2) is True
    labels.reset()
    other = _other_connection()
    result: list[bool] = []

    def admit_third() -> None:
        try:
            # A generous wait here, to see it wait: recording's own is POLICY_QUERY_SECONDS.
            result.append(labels.admit(scope, "third", 2, budget.Deadline(10)))
        finally:
            connection.close()  # this thread's own connection

    try:
        # Another worker is taking the last place: lock held, row inserted, not committed.
        other.execute("SELECT pg_advisory_xact_lock(%s)", [labels.lock_key(scope)])
        other.execute(
            "INSERT INTO tamma_metrics_admission (scope, key, created_at) VALUES (%s, %s, now())",
            [scope, "second"],
        )
        worker = threading.Thread(target=admit_third)
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive()  # waiting for the lock, not counting without "second"
        other.commit()
        worker.join(timeout=10)
        assert not worker.is_alive()
    finally:
        other.close()
    assert result == [False]  # it saw the cap full once "second" was committed
    assert sorted(Admission.objects.filter(scope=scope).values_list("key", flat=True)) == [
        "first",
        "second",
    ]

"""Database work with a time budget, so a slow or locked database cannot stall a scrape.

Prometheus announces how long it will wait (the view reads it from a header); past
that the whole scrape is lost, in-process metrics included. The database gauges
therefore get part of that time, capped by ``DATABASE_BUDGET_SECONDS``, and each query
is stopped by the database itself when the budget runs out:

- PostgreSQL: ``statement_timeout`` set with ``set_config(..., true)`` (``SET LOCAL``),
  lock waits included; put back before the savepoint is released (a released savepoint
  would keep it until the caller's transaction ends) or undone by the rollback.
- SQLite: ``PRAGMA busy_timeout`` for waits on another connection's lock, and a progress
  handler that interrupts a query running past the deadline; both restored afterwards.

The queries run in ``transaction.atomic`` (a savepoint inside the caller's transaction),
so a cancelled query is rolled back there and the rest of the request can still use
the connection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction

from .conf import app_settings, on_reset

__all__ = [
    "BudgetExhausted",
    "Deadline",
    "answered",
    "database_budget",
    "failed_recently",
    "time_limited",
    "within",
]

# Share of Prometheus' scrape timeout the database may use: the rest is for merging the
# multiprocess files, encoding and the network.
SCRAPE_TIMEOUT_SHARE = 0.8
# SQLite calls the progress handler every this many virtual-machine instructions.
_SQLITE_PROGRESS_STEPS = 1000


class BudgetExhausted(TimeoutError):
    """No time is left for the next query."""


class Deadline:
    """One scrape's time for the database, shared by everything that queries in it
    (authentication, visibility, the gauges)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())


def database_budget(scrape_timeout: float | None = None) -> float:
    """Seconds the database gauges may take in this scrape."""
    cap = float(app_settings.DATABASE_BUDGET_SECONDS)
    if scrape_timeout is None:
        return cap
    return min(cap, scrape_timeout * SCRAPE_TIMEOUT_SHARE)


class _Limiter:
    def __init__(self, using: str, seconds: float) -> None:
        self.connection = connections[using]
        self.vendor = self.connection.vendor
        self.deadline = time.monotonic() + seconds
        self.previous: Any = None  # the connection's own setting, read before the first limit

    def remaining_ms(self) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise BudgetExhausted("the database budget of this scrape is spent")
        return max(1, math.ceil(remaining * 1000))  # 0 would mean "no limit" on PostgreSQL

    def before_query(self) -> None:
        """Limit the next query to the time left (raises when none is left)."""
        ms = self.remaining_ms()
        with self.connection.cursor() as cursor:
            if self.vendor == "postgresql":
                if self.previous is None:
                    cursor.execute("SELECT current_setting('statement_timeout')")
                    self.previous = cursor.fetchone()[0]
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{ms}ms"])
            elif self.vendor == "sqlite":
                if self.previous is None:
                    cursor.execute("PRAGMA busy_timeout")
                    self.previous = cursor.fetchone()[0]
                    self.connection.connection.set_progress_handler(
                        self._sqlite_progress, _SQLITE_PROGRESS_STEPS
                    )
                cursor.execute(f"PRAGMA busy_timeout = {int(ms)}")

    def _sqlite_progress(self) -> int:
        # Non-zero interrupts the running statement (OperationalError "interrupted").
        return int(time.monotonic() > self.deadline)

    def restore(self, *, succeeded: bool) -> None:
        """Put the connection's own timeout back before the savepoint or transaction ends,
        so neither its COMMIT nor the caller's later queries run under the scrape's limit
        (a released savepoint keeps SET LOCAL values until the outer transaction ends)."""
        if self.previous is None:
            return
        if self.vendor == "postgresql":
            # After a failure the rollback to the savepoint undoes set_config itself.
            if succeeded:
                with self.connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('statement_timeout', %s, true)", [self.previous]
                    )
        elif self.vendor == "sqlite" and self.connection.connection is not None:
            # Connection settings, not transactional: always restore them.
            raw = self.connection.connection
            raw.set_progress_handler(None, 0)
            raw.execute(f"PRAGMA busy_timeout = {int(self.previous)}")


# When a time-limited block last found the database not answering (monotonic seconds).
_failed_at = float("-inf")
# How long best-effort callers (recording) leave such a database alone.
FAILED_RECENTLY_SECONDS = 1.0


def failed_recently() -> bool:
    """Whether a time-limited block found the database not answering (locked, down, out
    of time) within FAILED_RECENTLY_SECONDS: best-effort work then does not ask it, so a
    request waits for a failing database at most once."""
    return time.monotonic() - _failed_at < FAILED_RECENTLY_SECONDS


@on_reset
def answered() -> None:
    """The database just answered: forget the last failure, so that best-effort work
    asks it again at once (a retry right after an outage folds no new label value)."""
    global _failed_at
    _failed_at = float("-inf")


@contextmanager
def within(deadline: Deadline | None) -> Iterator[None]:
    """The block's queries finish by ``deadline`` (or fail with DatabaseError); no
    limit without one."""
    if deadline is None:
        yield
        return
    with time_limited(deadline.remaining()) as before_query:
        before_query()
        yield


@contextmanager
def time_limited(seconds: float, *, using: str = DEFAULT_DB_ALIAS) -> Iterator[Callable[[], None]]:
    """A transaction (or savepoint) whose queries must all finish within ``seconds``.

    Call the yielded function before each query: it gives that query the time left, or
    raises :class:`BudgetExhausted`. A query past the deadline fails with the database's
    ``OperationalError``; both leave the caller's transaction usable, and both are
    remembered for ``failed_recently``; a block that succeeds forgets them.
    """
    global _failed_at
    limiter = _Limiter(using, seconds)
    try:
        with transaction.atomic(using=using):
            try:
                yield limiter.before_query
            except BaseException:
                with suppress(Exception):  # the original error matters, not a clean-up
                    limiter.restore(succeeded=False)
                raise
            limiter.restore(succeeded=True)
        answered()
    except (OperationalError, InterfaceError, BudgetExhausted):
        _failed_at = time.monotonic()
        raise

"""Database expressions the reports share: seconds between datetimes and nearest-rank
percentiles, the same on SQLite and PostgreSQL, computed by the database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Case, Expression, FloatField, Func, QuerySet, Value, When
from django.db.models.expressions import Combinable
from django.db.models.functions import Floor, Greatest
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

__all__ = ["Epoch", "Offsets", "day_index", "offsets", "percentiles", "seconds_between"]


# SQL and its parameters, as Django's as_sql() returns them.
_Sql = tuple[str, list[Any] | tuple[Any, ...]]


class Epoch(Func):
    """Seconds since 1970-01-01 UTC of a datetime column."""

    output_field = FloatField()
    arity = 1

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> _Sql:
        # Django stores UTC text that julianday() reads; 2440587.5 is the Unix epoch.
        return self.as_sql(
            compiler, connection, template="((julianday(%(expressions)s) - 2440587.5) * 86400.0)"
        )

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> _Sql:
        return self.as_sql(
            compiler, connection, template="EXTRACT(EPOCH FROM %(expressions)s)::float8"
        )


Offsets = tuple[float, list[tuple[float, float]]]


def offsets(start: datetime, end: datetime) -> Offsets:
    """The current time zone's UTC offset at ``start`` (seconds) and its changes up to
    ``end``: [(from this Unix time, the new offset)], found hour by hour, then to the
    quarter hour."""
    zone = timezone.get_current_timezone()

    def offset(moment: datetime) -> float:
        delta = moment.astimezone(zone).utcoffset()
        assert delta is not None  # an aware datetime in a time zone has an offset
        return delta.total_seconds()

    first = current = offset(start)
    changes = []
    moment = start
    while moment < end:
        following = moment + timedelta(hours=1)
        if offset(following) != current:
            step = moment
            while offset(step) == current:
                step += timedelta(minutes=15)
            current = offset(step)
            changes.append((step.timestamp(), current))
        moment = following
    return first, changes


def day_index(field: str, start: datetime, zone_offsets: Offsets) -> Expression:
    """The calendar day, in the current time zone, of a datetime column, counted from
    ``start`` (a local midnight) as 0. Computed by the database from the zone's offsets
    in the window (``offsets(start, end)``, daylight-saving changes included), so no
    per-row function call."""
    first, changes = zone_offsets
    offset: Expression = Value(first)
    if changes:
        offset = Case(
            *(
                When(GreaterThanOrEqual(Epoch(field), Value(at)), then=Value(seconds))
                for at, seconds in reversed(changes)
            ),
            default=Value(first),
            output_field=FloatField(),
        )
    base = start.timestamp() + first  # the first midnight in local seconds
    return Floor((Epoch(field) + offset - Value(base)) / Value(86_400.0))


def seconds_between(start: str, end: str) -> Expression:
    """``end - start`` in seconds, as a float expression; 0 when ``end`` comes first.

    One rule with the counters (``transitions``): a span that runs backwards is counted
    as 0 by both, so the pages and ``/metrics`` agree. Such spans come only from rows
    written around the state API's checks (the ORM, the admin, older rows)."""
    return Greatest(Epoch(end) - Epoch(start), Value(0.0))


def percentiles(
    rows: QuerySet,
    value: Combinable,
    group: Combinable,
    ranks: Iterable[int] = (50, 95),
    sums: Mapping[str, Combinable] | None = None,
) -> dict[Any, dict[str, float]]:
    """{group: {"p50": ..., "p95": ..., "n": count, **sums}} of ``value`` over ``rows``.

    Nearest-rank percentiles (the value at rank ceil(p% of n)), computed by the database
    with window functions in one query whatever the number of rows; rows whose value is
    NULL are left out. ``sums`` (name: expression) are summed over the same rows of each
    group, in the same query (a count of the rows matching a condition is the sum of a
    0-or-1 expression).
    """
    ranks = tuple(ranks)
    sums = dict(sums or {})
    for name in sums:
        if not name.isidentifier() or not name.islower():
            raise ValueError(f"sum names are lowercase identifiers, not {name!r}")
    columns = [f"sum_{name}" for name in sums]
    inner = (
        rows.order_by()
        .annotate(
            grp=group,
            val=value,
            **dict(zip(columns, sums.values(), strict=True)),
        )
        .filter(val__isnull=False)
        .values("grp", "val", *columns)
    )
    sql, params = inner.query.sql_with_params()
    # Integer arithmetic: ceil(n * p / 100) as (n * p + 99) / 100 on both databases.
    wanted = " OR ".join(f"rn = (n * {int(p)} + 99) / 100" for p in ranks)
    summed = "".join(f", SUM(t.{c}) OVER (PARTITION BY t.grp) AS {c}" for c in columns)
    query = (
        f"SELECT grp, val, rn, n{''.join(f', {c}' for c in columns)} FROM ("
        " SELECT t.grp AS grp, t.val AS val,"
        " ROW_NUMBER() OVER (PARTITION BY t.grp ORDER BY t.val) AS rn,"
        f" COUNT(*) OVER (PARTITION BY t.grp) AS n{summed}"
        f" FROM ({sql}) t) ranked WHERE {wanted}"
    )
    result: dict[Any, dict[str, float]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        for grp, val, rn, n, *totals in cursor.fetchall():
            entry = result[grp]
            entry["n"] = n
            for name, total in zip(sums, totals, strict=True):
                entry[name] = float(total or 0)
            for p in ranks:
                if rn == (n * p + 99) // 100:
                    entry[f"p{p}"] = float(val)
    return dict(result)

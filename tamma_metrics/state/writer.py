"""Upserts of Tamma's state: one transaction per batch, each item answered on its own.

Exactly once, in short: the row's state is the deduplication key. Rows are read
``FOR UPDATE`` in key order (SQLite: the write lock is taken when the transaction begins),
so concurrent batches touching one row run one after the other and the second sees the
first's state; an insert that loses a race on the unique key rolls the whole batch back
(its on-commit callbacks with it) and the batch runs again. Transitions are counted by
the models' receivers on commit, exactly as for any other save.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial, reduce
from operator import or_
from typing import Any, cast

from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Model, Q

from .. import labels, selfmetrics
from ..models import Deployment, Issue
from . import kinds, links, shipped
from .kinds import CREATED_AT, KINDS, Kind, iso

__all__ = ["ATTEMPTS", "Outcome", "apply"]

logger = logging.getLogger(__name__)

# Runs of a batch that lost a race (a unique key, a PostgreSQL deadlock) before giving up.
ATTEMPTS = 3
# PostgreSQL's deadlock_detected and serialization_failure: the batch may run again.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}


@dataclass
class Outcome:
    """What one item did: created, updated, unchanged, stale, not_found or conflict."""

    status: str
    errors: dict[str, list[str]] | None = None
    current: dict[str, Any] | None = None
    folded: list[dict[str, str]] = field(default_factory=list)


def apply(kind_name: str, items: list[dict[str, Any]]) -> list[Outcome]:
    """Write validated items of one kind (wire field names, Python values) in one
    transaction; an Outcome per item, in order. Raises DatabaseError when the database
    fails (nothing of the batch is then written)."""
    kind = KINDS[kind_name]
    labels.generation()
    prepared = [_judged(kind, item) for item in items]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with _write_transaction():
                return _write(kind, prepared)
        except (IntegrityError, OperationalError) as exc:
            retry = isinstance(exc, IntegrityError) or _sqlstate(exc) in _RETRYABLE_SQLSTATES
            if not retry or attempt == ATTEMPTS:
                raise
            logger.info(
                "tamma_metrics: %s batch lost a race (%s); running it again", kind.name, exc
            )
    raise AssertionError("unreachable")


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "sqlstate", None) or getattr(exc.__cause__, "pgcode", None)


@contextmanager
def _write_transaction() -> Iterator[None]:
    """``atomic``, beginning IMMEDIATE on SQLite: a deferred transaction that reads first
    must later upgrade its lock, which SQLite refuses at once (no busy wait) while
    another connection writes; taking the write lock up front waits its turn instead."""
    connection = transaction.get_connection()
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    connection.ensure_connection()
    mode = connection.transaction_mode
    connection.transaction_mode = "IMMEDIATE"
    try:
        block = transaction.atomic()
        block.__enter__()
    finally:
        connection.transaction_mode = mode
    try:
        yield
    except BaseException as exc:
        block.__exit__(type(exc), exc, exc.__traceback__)  # rolls back; never swallows
        raise
    else:
        block.__exit__(None, None, None)


def _judged(kind: Kind, item: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The item with its counted labels as the label policy records them, and the folds
    (``redacted`` says which of them looked private)."""
    values, folded = dict(item), []
    if kind.prepare is not None:
        kind.prepare(values)
    for column, (family, label) in kind.labels.items():
        if column in values:
            value, verdict = labels.judge(family, label, values[column], patient=True)
            values[column] = value
            if verdict != labels.KEPT:
                folded.append(
                    {"family": family, "label": label, "recorded_as": value, "verdict": verdict}
                )
    return values, folded


def _count_label_changes(folded: list[dict[str, str]]) -> None:
    """The folds and redactions of a written item, in the self-metrics (on commit, as
    ``record`` counts those of an event it records)."""
    for fold in folded:
        redacted = fold["verdict"] == labels.REDACTED
        transaction.on_commit(
            partial(
                selfmetrics.count_label_change, fold["family"], fold["label"], redacted=redacted
            ),
            robust=True,
        )


def _issue_key(values: dict[str, Any]) -> tuple[str, str, str] | None:
    if values.get("issue_external_id") is None:
        return None
    return (values["platform"], values["repository"], values["issue_external_id"])


def _grouped(
    model: type[Model], keys: set[tuple[Any, ...]], group: tuple[str, str], last: str
) -> Q:
    """OR of (a=.., b=.., c IN ..) per (a, b): a batch usually names one repository."""
    by_group: dict[tuple[Any, Any], list[Any]] = defaultdict(list)
    for a, b, c in keys:
        by_group[(a, b)].append(c)
    clauses = [
        Q(**{group[0]: a, group[1]: b, f"{last}__in": values})
        for (a, b), values in by_group.items()
    ]
    return reduce(or_, clauses)


def _issues_named(prepared: list[tuple[dict[str, Any], list]]) -> dict[tuple, Issue]:
    keys = {key for values, _ in prepared if (key := _issue_key(values))}
    if not keys:
        return {}
    rows = Issue.objects.filter(_grouped(Issue, keys, ("platform", "repository"), "external_id"))
    return {(row.platform, row.repository, row.external_id): row for row in rows}


def _db_key(kind: Kind, values: dict[str, Any], issue: Issue | None) -> tuple[Any, ...]:
    if kind.name == "approvals":
        assert issue is not None
        return (issue.pk, values["external_id"])
    return tuple(values[name] for name in kind.key)


def _locked_rows(kind: Kind, keys: set[tuple[Any, ...]]) -> dict[tuple[Any, ...], Model]:
    """The existing rows of ``keys``, locked for this transaction in key order."""
    if not keys:
        return {}
    model = kind.model
    if kind.name == "approvals":
        where = Q(issue_id__in={k[0] for k in keys}, external_id__in={k[1] for k in keys})
        fields: tuple[str, ...] = ("issue_id", "external_id")
    elif len(kind.key) == 3:
        where = _grouped(model, keys, ("platform", "repository"), kind.key[2])
        fields = kind.key
    else:
        where = Q(**{f"{kind.key[0]}__in": [k[0] for k in keys]})
        fields = kind.key
    rows = model._base_manager.filter(where).order_by(*fields).select_for_update(no_key=True)
    found = {tuple(getattr(row, name) for name in fields): row for row in rows}
    return {key: row for key, row in found.items() if key in keys}


def _write(kind: Kind, prepared: list[tuple[dict[str, Any], list]]) -> list[Outcome]:
    issues = _issues_named(prepared) if kind.issue else {}
    outcomes: list[Outcome | None] = [None] * len(prepared)
    todo: list[tuple[int, Issue | None]] = []
    for index, (values, _) in enumerate(prepared):
        reference = _issue_key(values)
        issue = issues.get(reference) if reference else None
        if reference and issue is None:
            platform, repository, external_id = reference
            outcomes[index] = Outcome(
                "not_found",
                errors={
                    "issue_external_id": [
                        f"No issue {external_id} in {platform} {repository}: send it to "
                        "POST /api/v1/issues first, then this item again."
                    ]
                },
            )
        else:
            todo.append((index, issue))
    linked = links.resolve(kind.name, {i: prepared[i][0] for i, _ in todo})
    for index, link in linked.items():
        if link.missing:
            outcomes[index] = Outcome("not_found", errors=link.missing)
    todo = [(i, issue) for i, issue in todo if not (i in linked and linked[i].missing)]
    keys = {_db_key(kind, prepared[i][0], issue) for i, issue in todo}
    rows = _locked_rows(kind, keys)
    # Key order, so concurrent batches insert (and lock) in the same order; items of one
    # key keep the order they were sent in.
    todo.sort(key=lambda pair: tuple(str(prepared[pair[0]][0][k]) for k in kind.key))
    for index, issue in todo:
        values, folded = prepared[index]
        key = _db_key(kind, values, issue)
        row = rows.get(key)
        link = linked.get(index) or links.Link()
        if row is None:
            created, outcome = _create(kind, values, issue, link)
            if created is not None:
                rows[key] = created
        else:
            if issue is not None and getattr(row, "issue_id", None) == issue.pk:
                # The transition reads its labels without a query (the kind's model has
                # an ``issue``, as ``issue_id`` shows; Model does not say so).
                cast(Any, row).issue = issue
            outcome = _update(kind, row, values, issue, link)
        if kind.name == "deployments" and outcome.status in ("created", "updated"):
            shipped.stamp_shipped(cast(Deployment, rows[key]))
        if outcome.status in ("created", "updated"):
            _count_label_changes(folded)
        outcome.folded = [
            {name: text for name, text in fold.items() if name != "verdict"} for fold in folded
        ]
        outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def _columns(kind: Kind, values: dict[str, Any], issue: Issue | None) -> dict[str, Any]:
    """The item's values as the row's columns (attnames), less its observation time."""
    skip = {"observed_at", "issue_external_id", *kind.references}
    if kind.issue and not _has_column(kind.model, "platform"):
        skip |= {"platform", "repository"}  # they name the issue only
    columns = {name: value for name, value in values.items() if name not in skip}
    if kind.issue and (issue is not None or kind.issue == "required"):
        columns["issue_id"] = issue.pk if issue else None
    return columns


def _has_column(model: type[Model], name: str) -> bool:
    return any(f.name == name for f in model._meta.concrete_fields)


def _stamp(kind: Kind, columns: dict[str, Any], row: Model | None, observed: datetime) -> None:
    """Times the item left out, taken from when it was observed (not the server's clock)."""
    if not kind.stamps or kind.status is None:
        return
    state = {"status": columns.get(kind.status, getattr(row, kind.status, None))}
    for name, needed in kind.stamps.items():
        held = getattr(row, name, None) if row is not None else None
        if columns.get(name) is None and held is None and needed(state):
            columns[name] = observed


def _created(kind: Kind, created: str, columns: dict[str, Any], observed: datetime) -> datetime:
    """When a row the item does not date began: when it was observed, or the earliest
    time the item gives that cannot come before it (a first review, a merge...)."""
    after = {
        name
        for chain in kind.chains
        if created in chain
        for name in chain[chain.index(created) + 1 :]
    }
    return min([observed, *(columns[name] for name in after if columns.get(name) is not None)])


def _create(
    kind: Kind, values: dict[str, Any], issue: Issue | None, link: links.Link
) -> tuple[Model | None, Outcome]:
    observed = values["observed_at"]
    columns = {**_columns(kind, values, issue), **link.on_create, **link.columns}
    created = CREATED_AT.get(kind.name)
    if created and columns.get(created) is None:
        columns[created] = _created(kind, created, columns, observed)
    _stamp(kind, columns, None, observed)
    backwards = _backwards(kind, None, columns)
    if backwards:
        return None, Outcome("rejected", errors=backwards)
    columns[kind.observed] = observed
    if issue is not None:
        del columns["issue_id"]
        columns["issue"] = issue  # the transition reads its labels without a query
    row = kind.model(**columns)
    row.save()
    for name, related in link.many.items():
        getattr(row, name).add(*related)
    return row, Outcome("created")


def _add_related(row: Model, link: links.Link) -> bool:
    """Add the related rows the row does not hold yet (a deployment's pull requests only
    grow); whether any was added."""
    added = False
    for name, related in link.many.items():
        held = set(getattr(row, name).values_list("pk", flat=True))
        new = [other for other in related if other.pk not in held]
        if new:
            getattr(row, name).add(*new)
            added = True
    return added


def _current(kind: Kind, row: Model) -> dict[str, Any]:
    current: dict[str, Any] = {"observed_at": iso(getattr(row, kind.observed))}
    if kind.status:
        current["status"] = getattr(row, kind.status)
    return current


# Where an item stands against the row: a newer observation, one at the same second and
# the same lifecycle rank, or an older one (or one at the same second that the lifecycle
# has passed).
NEWER, SAME, OLDER = "newer", "same", "older"
_EMPTY = (None, "", 0, False)


def _order(kind: Kind, row: Model, columns: dict[str, Any], observed: datetime) -> str:
    held = getattr(row, kind.observed)
    if held is None or observed > held:
        return NEWER
    if observed < held:
        return OLDER
    new, old = kind.lifecycle_rank({**vars(row), **columns}), kind.lifecycle_rank(vars(row))
    return NEWER if new > old else SAME if new == old else OLDER


def _merged(
    kind: Kind, row: Model, columns: dict[str, Any], order: str, same_second: bool
) -> dict[str, Any]:
    """The item's values as they merge into the row (docs/state.md, "Ordering"): facts by
    their rule whatever the order; anything else only from a newer observation, or at the
    same second when it agrees (a difference is left for the caller to refuse)."""
    merged = {}
    for name, value in columns.items():
        rule = kind.facts.get(name)
        held = getattr(row, name)
        if rule is None:
            if order != OLDER:
                merged[name] = value
        elif rule == kinds.EARLIEST:
            if value is not None and (held is None or value < held):
                merged[name] = value
        elif rule == kinds.MAX:
            if value is not None and (held is None or value > held):
                merged[name] = value
        elif value in _EMPTY:
            continue  # FILL and SIZE: an item that does not know the fact adds nothing
        elif rule == kinds.SIZE and same_second and held not in _EMPTY:
            merged[name] = max(value, held)  # the size as of that second, in any order
        elif held in _EMPTY or order == NEWER:
            merged[name] = value
        elif order == SAME:
            merged[name] = value  # a FILL fact that differs: refused by the caller
    return merged


def _backwards(kind: Kind, row: Model | None, changes: dict[str, Any]) -> dict[str, list[str]]:
    """Errors for times that would run backwards once ``changes`` are merged into the row,
    naming the item's field (a time the row already held is not the item's fault)."""
    errors: dict[str, list[str]] = {}
    for chain in kind.chains:
        earlier: str | None = None
        for name in chain:
            value = changes[name] if name in changes else getattr(row, name, None)
            if value is None:
                continue
            if earlier is not None:
                before = changes[earlier] if earlier in changes else getattr(row, earlier)
                if value < before:
                    if name in changes:
                        message = f"Must not be before {earlier} ({_shown(before)})."
                        errors.setdefault(name, [message])
                    else:
                        message = f"Must not be after {name} ({_shown(value)})."
                        errors.setdefault(earlier, [message])
            earlier = name
    return errors


def _update(
    kind: Kind, row: Model, values: dict[str, Any], issue: Issue | None, link: links.Link
) -> Outcome:
    observed = values["observed_at"]
    held = getattr(row, kind.observed)
    columns = {**_columns(kind, values, issue), **link.columns}
    order = _order(kind, row, columns, observed)
    if order != OLDER:
        _stamp(kind, columns, row, observed)
    merged = _merged(kind, row, columns, order, same_second=observed == held)
    changes = {name: v for name, v in merged.items() if getattr(row, name) != v}
    if order == OLDER:
        # Only facts merge from an older observation; what the row's counters used stays.
        counted = kind.frozen(row, set(changes))
        changes = {name: v for name, v in changes.items() if name not in counted}
    if not changes:
        added = _add_related(row, link)
        if order == OLDER:
            return Outcome("updated" if added else "stale", current=_current(kind, row))
        if held is None or observed > held:
            type(row)._base_manager.filter(pk=row.pk).update(**{kind.observed: observed})
            setattr(row, kind.observed, observed)
        return Outcome("updated" if added else "unchanged")
    if order == SAME:
        # Facts merge; anything else that differs at the same second (a FILL fact included:
        # two shas for one deployment) is a contradiction neither order may settle.
        differ = sorted(
            name
            for name in changes
            if kind.facts.get(name, kinds.FILL) == kinds.FILL
            and (name not in kind.facts or getattr(row, name) not in _EMPTY)
        )
        if differ:
            return Outcome(
                "conflict",
                errors={
                    name: ["Another observation at the same observed_at holds a different value."]
                    for name in differ
                },
                current=_current(kind, row),
            )
    status = kind.status
    previous: Any = getattr(row, status) if status else None  # a str when it has one
    if (
        status in changes
        and kind.allowed is not None
        and not kind.allowed(previous, changes[status])
    ):
        return Outcome(
            "conflict",
            errors={status: [f"It is {previous}, which is final."]},
            current=_current(kind, row),
        )
    frozen = sorted(kind.frozen(row, set(changes)) & set(changes))
    if frozen:
        return Outcome(
            "conflict",
            errors={
                name: [f"Already counted as {_shown(getattr(row, name))}; it no longer changes."]
                for name in frozen
            },
            current=_current(kind, row),
        )
    backwards = _backwards(kind, row, changes)
    if backwards:
        return Outcome("rejected", errors=backwards, current=_current(kind, row))
    for name, value in changes.items():
        setattr(row, name, value)
    written = list(changes)
    if order == NEWER:
        setattr(row, kind.observed, observed)
        written.append(kind.observed)
    row.save(update_fields=written)
    _add_related(row, link)
    return Outcome("updated")


def _shown(value: Any) -> str:
    return iso(value) or "" if isinstance(value, datetime) else str(value)

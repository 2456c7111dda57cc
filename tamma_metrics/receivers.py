"""Model signals -> ``record``: thin handlers that decide whether a transition happened.

A transition is counted once (a second save in the same status counts nothing) and
only when the transaction commits (a rollback, including a rolled-back savepoint,
discards the callback). The previous status is read from the database in
``pre_save`` rather than remembered at load time, so two in-memory copies of one
row, deferred fields and ``refresh_from_db`` cannot make a transition count twice;
inside ``atomic`` the row is locked for the rest of the transaction (PostgreSQL).
Which events a transition stands for is decided in ``transitions``; ``QuerySet.update()``
and ``bulk_create()`` send no signals: code that uses them records the same
``transitions`` itself once committed, as the demo's ``seed_demo`` does.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.db import models, transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from . import selfmetrics, transitions
from .models import Approval, Deployment, Incident, Issue, PullRequest

logger = logging.getLogger(__name__)

_PREVIOUS = "_tamma_previous_status"
_KNOWN = "_tamma_status_read_under_lock"


def previous_status_known(instance: models.Model, status: str) -> None:
    """Tell the next save of ``instance`` its previous status: the caller read the row
    ``FOR UPDATE`` in the transaction the save runs in (the state API does), so the
    ``pre_save`` query would read the same value again."""
    setattr(instance, _KNOWN, status)


_safely = selfmetrics.swallowed("receiver", "receiver")


@receiver(pre_save, sender=Issue, dispatch_uid="tamma_issue_previous")
@receiver(pre_save, sender=PullRequest, dispatch_uid="tamma_pr_previous")
@receiver(pre_save, sender=Approval, dispatch_uid="tamma_approval_previous")
@receiver(pre_save, sender=Deployment, dispatch_uid="tamma_deployment_previous")
@receiver(pre_save, sender=Incident, dispatch_uid="tamma_incident_previous")
@_safely
def remember_previous_status(
    sender: type[models.Model],
    instance: Any,
    raw: bool = False,
    using: str = "default",
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    previous = None
    known = instance.__dict__.pop(_KNOWN, None)
    if known is not None and transaction.get_connection(using).in_atomic_block:
        previous = known
    elif not instance._state.adding and instance.pk is not None:
        if update_fields is not None and "status" not in update_fields:
            previous = instance.status  # the status column is not written: no transition
        else:
            previous = _stored_status(sender, instance.pk, using)
    setattr(instance, _PREVIOUS, previous)


def _stored_status(model: type[models.Model], pk: Any, using: str) -> str | None:
    """The row's status as committed (locked until the transaction ends inside ``atomic``),
    by a statement built once per model: building a QuerySet for it cost more than the
    query on every status-changing save."""
    connection = transaction.get_connection(using)
    locked = connection.in_atomic_block and connection.features.has_select_for_update
    sql = _STATUS_SQL.get((model, connection.vendor, locked))
    if sql is None:
        rows = model._base_manager.using(using).filter(pk=0).order_by().values_list("status")
        query, _ = (rows.select_for_update() if locked else rows).query.sql_with_params()
        sql = _STATUS_SQL[(model, connection.vendor, locked)] = query
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        row = cursor.fetchone()
    return row[0] if row else None


# (model, vendor, locked) -> "SELECT status FROM ... WHERE id = %s [FOR UPDATE]"
_STATUS_SQL: dict[tuple[Any, str, bool], str] = {}


@_safely
def count_transition(
    sender: type[models.Model],
    instance: Any,
    created: bool = False,
    raw: bool = False,
    using: str = "default",
    **kwargs: Any,
) -> None:
    """After a save of a counted model: its transition's events, recorded on commit."""
    if raw:
        return  # fixtures loading rows: no transition happened
    previous = getattr(instance, _PREVIOUS, None)
    events = transitions.BY_MODEL[sender](instance, created=created, previous=previous)
    for func, arguments in events:
        transaction.on_commit(functools.partial(func, **arguments), using=using, robust=True)


for _model in transitions.BY_MODEL:
    post_save.connect(count_transition, sender=_model, dispatch_uid=f"tamma_{_model.__name__}")

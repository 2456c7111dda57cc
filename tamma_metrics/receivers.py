"""Model signals -> ``record``: thin handlers that decide whether a transition happened.

A transition is counted once (a second save in the same status counts nothing) and
only when the transaction commits (a rollback, including a rolled-back savepoint,
discards the callback). Which status a save replaced is learnt by the save's own UPDATE
(``models.tracking``), not remembered from load time alone, so two in-memory copies of
one row, other processes and other hosts cannot make a transition count twice.
Which events a transition stands for is decided in ``transitions``; ``QuerySet.update()``
and ``bulk_create()`` send no signals: code that uses them records the same
``transitions`` itself once committed, as the demo's ``seed_demo`` does.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db import models, transaction
from django.db.models.signals import post_save

from . import selfmetrics, transitions
from .models import tracking

_safely = selfmetrics.swallowed("receiver", "receiver")


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
    previous = tracking.replaced_status(instance)
    if raw:
        return  # fixtures loading rows: no transition happened
    events = transitions.BY_MODEL[sender](instance, created=created, previous=previous)
    for func, arguments in events:
        transaction.on_commit(functools.partial(func, **arguments), using=using, robust=True)


for _model in transitions.BY_MODEL:
    post_save.connect(count_transition, sender=_model, dispatch_uid=f"tamma_{_model.__name__}")

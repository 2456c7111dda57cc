"""What a production deployment does to the pull requests it shipped: each gets its
``deployed_at`` (the deployment's finish) the first time, and its change's lead time and
deploy stage are counted then, once, on commit.

Once: the pull requests are read ``FOR UPDATE`` where ``deployed_at`` is still empty
(SQLite holds the write lock already), so two deployments shipping one pull request at
the same moment stamp and count it once; the later one finds it stamped.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction

from .. import transitions
from ..models import Deployment, PullRequest

__all__ = ["stamp_shipped"]


def stamp_shipped(row: Deployment) -> int:
    """Stamp and count the pull requests ``row`` shipped to production for the first
    time; how many. Nothing unless ``row`` is a deployed production deployment."""
    if not row.is_production or row.status not in Deployment.DEPLOYED or row.finished_at is None:
        return 0
    pending = list(
        PullRequest.objects.filter(deployments=row, deployed_at__isnull=True)
        .order_by("pk")
        .select_for_update(of=("self",))
    )
    if not pending:
        return 0
    PullRequest.objects.filter(pk__in=[pr.pk for pr in pending]).update(deployed_at=row.finished_at)
    events = []
    for pr in pending:
        pr.deployed_at = row.finished_at
        events += transitions.pull_request_deployed(pr)
    transaction.on_commit(partial(transitions.record_all, events), robust=True)
    return len(pending)

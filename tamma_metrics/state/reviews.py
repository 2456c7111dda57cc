"""A review submitted on a pull request by a person: the timeline's first review and
approval, and its review rounds (docs/webhooks.md, "Which reviews count").

A review is a fact at its own time, not a newer state of the row, so it is applied under
the row's lock whatever the row's ``observed_at``. It is kept by the platform's review id
(``PullRequestReview``), so the same review delivered again (under a new delivery id, or
in another event) counts once.

Only people's reviews of someone else's pull request are applied: the time to the first
review is the pickup stage and the time to the approval is work waiting for a person, so
a bot's review or the author's own reply would end those waits early and count rounds
nobody took. The webhooks tell bots and authors apart on each platform and do not call
this for them. A round is a verdict (approved, changes requested); a comment ends the
pickup (someone looked) but is no round: GitHub records every reply in a review thread as
a ``commented`` review.
"""

from __future__ import annotations

from datetime import datetime

from ..models import PullRequest, PullRequestReview
from .kinds import iso

__all__ = [
    "APPROVED",
    "CHANGES_REQUESTED",
    "COMMENTED",
    "Backwards",
    "Skipped",
    "review_submitted",
]

APPROVED, CHANGES_REQUESTED, COMMENTED = "approved", "changes_requested", "commented"
ROUNDS = frozenset({APPROVED, CHANGES_REQUESTED})


class Skipped(Exception):
    """A review that changes nothing by design; the message says why."""


class Backwards(Exception):
    """A review dated before the pull request was opened."""


def review_submitted(
    platform: str,
    repository: str,
    number: int,
    submitted_at: datetime,
    verdict: str,
    review_id: str,
) -> str:
    """Apply one review by a person; ``updated``, or ``unchanged`` for a review already
    applied. Skipped for a pull request the app does not hold or one already merged (its
    stages were counted from the timeline it had); Backwards for a review before the pull
    request was opened. Call inside the transaction that records the delivery."""
    row = (
        PullRequest.objects.select_for_update()
        .filter(platform=platform, repository=repository, number=number)
        .first()
    )
    if row is None:
        raise Skipped("a review of a pull request the app does not hold")
    if row.status == PullRequest.Status.MERGED:
        raise Skipped("a review of a merged pull request (its stages were counted at the merge)")
    if submitted_at < row.created_at:
        raise Backwards(f"Must not be before the pull request was opened ({iso(row.created_at)}).")
    _, new = PullRequestReview.objects.get_or_create(
        pull_request=row,
        external_id=review_id,
        defaults={"verdict": verdict, "submitted_at": submitted_at},
    )
    if not new:
        return "unchanged"
    changed = []
    if verdict in ROUNDS:
        row.review_rounds += 1
        changed.append("review_rounds")
    if verdict == CHANGES_REQUESTED:
        row.changes_requested += 1
        changed.append("changes_requested")
    if row.first_review_at is None or submitted_at < row.first_review_at:
        row.first_review_at = submitted_at
        changed.append("first_review_at")
    if verdict == APPROVED and (row.approved_at is None or submitted_at < row.approved_at):
        row.approved_at = submitted_at
        changed.append("approved_at")
    if changed:
        row.save(update_fields=changed)
    return "updated"

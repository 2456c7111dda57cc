"""A review submitted on a pull request by a person: the timeline's first review and
approval, and its review rounds. A review is a fact at its own time, not a newer state of
the row, so it is applied under the row's lock whatever the row's ``observed_at``; the
caller makes it happen once per delivery (webhook delivery ids).

Only people's reviews are applied: the time to the first review is the pickup stage and
the time to the approval is work waiting for a person, so a bot's review (a GitHub App,
an access-token bot) would end those waits early and count rounds nobody took. The
webhooks tell bots apart on each platform and do not call this for them."""

from __future__ import annotations

from datetime import datetime

from ..models import PullRequest

__all__ = ["APPROVED", "CHANGES_REQUESTED", "review_submitted"]

APPROVED, CHANGES_REQUESTED = "approved", "changes_requested"


def review_submitted(
    platform: str, repository: str, number: int, submitted_at: datetime, verdict: str
) -> str:
    """Apply one review by a person; ``applied``, or ``ignored`` for a pull request the
    app does not hold or one already merged (its stages were counted from the timeline it
    had). Call inside the transaction that records the delivery."""
    row = (
        PullRequest.objects.select_for_update()
        .filter(platform=platform, repository=repository, number=number)
        .first()
    )
    if row is None or row.status == PullRequest.Status.MERGED:
        return "ignored"
    row.review_rounds += 1
    changed = ["review_rounds"]
    if verdict == CHANGES_REQUESTED:
        row.changes_requested += 1
        changed.append("changes_requested")
    if row.first_review_at is None or submitted_at < row.first_review_at:
        row.first_review_at = submitted_at
        changed.append("first_review_at")
    if verdict == APPROVED and (row.approved_at is None or submitted_at < row.approved_at):
        row.approved_at = submitted_at
        changed.append("approved_at")
    row.save(update_fields=changed)
    return "applied"

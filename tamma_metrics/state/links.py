"""Rows an item names besides its issue: the pull requests a deployment shipped, the
deployment an incident came from. Each kind's references are read in one query per
batch; a name that matches no row makes the item ``not_found`` (send that row first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Model, Q

from ..models import Deployment, PullRequest

__all__ = ["Link", "resolve"]


@dataclass
class Link:
    """What an item's references come to: columns to write, columns a new row takes,
    related rows to add (many-to-many), or the fields that name missing rows."""

    columns: dict[str, Any] = field(default_factory=dict)
    on_create: dict[str, Any] = field(default_factory=dict)
    many: dict[str, list[Model]] = field(default_factory=dict)
    missing: dict[str, list[str]] | None = None


def resolve(kind: str, items: dict[int, dict[str, Any]]) -> dict[int, Link]:
    """A Link per item index, for the kinds that have references."""
    if kind == "deployments":
        return _shipped(items)
    if kind == "incidents":
        return _causes(items)
    return {}


def _where(keys: set[tuple[str, str, Any]], last: str) -> Q:
    clauses = Q()
    for platform, repository, value in keys:
        clauses |= Q(platform=platform, repository=repository, **{last: value})
    return clauses


def _shipped(items: dict[int, dict[str, Any]]) -> dict[int, Link]:
    keys = {
        (values["platform"], values["repository"], number)
        for values in items.values()
        for number in values.get("pull_requests", ())
    }
    found: dict[tuple, PullRequest] = {}
    if keys:
        # numbers__in per repository would be shorter SQL; batches name one repository.
        rows = PullRequest.objects.filter(_where(keys, "number")).only(
            "id", "platform", "repository", "number"
        )
        found = {(row.platform, row.repository, row.number): row for row in rows}
    links = {}
    for index, values in items.items():
        numbers = values.get("pull_requests", ())
        where = (values["platform"], values["repository"])
        absent = [n for n in numbers if (*where, n) not in found]
        if absent:
            shown = ", ".join(str(n) for n in absent)
            message = (
                f"No pull request {shown} in {where[0]} {where[1]}: send it to "
                "POST /api/v1/pull-requests first, then this item again."
            )
            links[index] = Link(missing={"pull_requests": [message]})
        else:
            links[index] = Link(many={"pull_requests": [found[(*where, n)] for n in numbers]})
    return links


def _causes(items: dict[int, dict[str, Any]]) -> dict[int, Link]:
    keys = {
        (values["platform"], values["repository"], values["deployment_external_id"])
        for values in items.values()
        if values.get("deployment_external_id")
    }
    found: dict[tuple, int] = {}
    if keys:
        rows = Deployment.objects.filter(_where(keys, "external_id"))
        found = {
            (p, r, e): pk
            for pk, p, r, e in rows.values_list("id", "platform", "repository", "external_id")
        }
    links = {}
    for index, values in items.items():
        named = values.get("deployment_external_id")
        where = (values["platform"], values["repository"])
        if named is None:
            links[index] = Link(on_create=_attributed(*where, values))
        elif (*where, named) in found:
            cause = found[(*where, named)]
            links[index] = Link(columns={"deployment_id": cause, "attributed": False})
        else:
            message = (
                f"No deployment {named} in {where[0]} {where[1]}: send it to "
                "POST /api/v1/deployments first, then this item again."
            )
            links[index] = Link(missing={"deployment_external_id": [message]})
    return links


def _attributed(platform: str, repository: str, values: dict[str, Any]) -> dict[str, Any]:
    """The last production deployment of the repository that was deployed before the
    incident opened, as Apache DevLake attributes incidents; none when there is none."""
    opened = values.get("opened_at") or values["observed_at"]
    cause = (
        Deployment.objects.filter(
            platform=platform,
            repository=repository,
            tier=Deployment.Tier.PRODUCTION,
            status__in=Deployment.DEPLOYED,
            finished_at__lte=opened,
        )
        .order_by("-finished_at")
        .values_list("id", flat=True)
        .first()
    )
    return {"deployment_id": cause, "attributed": cause is not None}

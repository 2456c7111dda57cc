"""What a caller may see: the guardian object permission ``view_metricfamily`` on
``MetricFamily`` rows, granted to their groups (roles) or to them; families no row
covers are for superusers only. The permitted set is cached per user under a version
that any permission change bumps, so an edit in the admin applies on the next scrape in
every process sharing the cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.cache import cache
from django.db import DatabaseError
from guardian.shortcuts import get_objects_for_user

from .. import budget
from ..catalogue import EVERYTHING, Visibility
from ..models import MetricFamily
from ..models.access import VIEW_PERMISSION
from . import callers
from .callers import Caller, NoFamilies, Unavailable

__all__ = [
    "VIEW_PERMISSION",
    "bump_version",
    "connect_signals",
    "may_create_token_for",
    "may_grant",
    "visibility",
    "visible_families",
]

VERSION_KEY = "tamma_metrics:access_version"
CACHE_SECONDS = 300


def _version() -> int:
    version: int = cache.get(VERSION_KEY, 0)
    return version


def bump_version(**kwargs: Any) -> None:
    """Invalidate every cached visibility (a signal handler: takes any arguments)."""
    try:
        cache.incr(VERSION_KEY)
    except ValueError:  # not set yet
        cache.set(VERSION_KEY, 1, None)


def visibility(caller: Caller, *, deadline: budget.Deadline | None = None) -> Visibility:
    """The families a caller may see; raises NoFamilies when there are none, and
    Unavailable when the database does not answer by ``deadline`` and no recent
    verification of the same credentials knows the answer."""
    user = caller.user
    if user is None or user.is_superuser:
        return EVERYTHING
    key = f"tamma_metrics:families:{user.pk}:{_version()}"
    names = cache.get(key)
    if names is None:
        try:
            with budget.within(deadline):
                names = frozenset(
                    get_objects_for_user(
                        user,
                        VIEW_PERMISSION,
                        klass=MetricFamily,
                        with_superuser=False,
                        accept_global_perms=False,
                    ).values_list("name", flat=True)
                )
        except (DatabaseError, budget.BudgetExhausted):
            recent = callers.recently_verified(caller.fingerprint)
            if recent is None or recent[2] is None:
                raise Unavailable from None
            return recent[2]
        cache.set(key, names, CACHE_SECONDS)
    if not names:
        raise NoFamilies
    seen = Visibility(names, False)
    callers.remember_seen(caller, seen)
    return seen


def may_create_token_for(user: Any, owner: Any) -> bool:
    """A token acts as its owner: only the owner, a superuser, or who holds the explicit
    permission to act for others may create one."""
    allowed: bool = (
        owner.pk == user.pk
        or user.is_superuser
        or user.has_perm("tamma_metrics.create_token_for_others")
    )
    return allowed


def visible_families(caller: Caller, names: Iterable[str]) -> set[str]:
    """Those of ``names`` the caller may see (a report shows only their parts)."""
    try:
        seen = visibility(caller)
    except NoFamilies:
        return set()
    return {name for name in names if seen.allows_family(name)}


def may_grant(user: Any, families: Iterable[MetricFamily]) -> bool:
    """Whether ``user`` may let others see ``families``: only families it sees itself,
    so nobody hands out (to others or, through a role, to itself) more than it has."""
    if user.is_superuser:
        return True
    names = {family.name for family in families}
    return visible_families(Caller(user, "session"), names) == names


def connect_signals() -> None:
    """Bump the visibility version whenever anything that decides it changes."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from ..models import MetricFamilyGroupPermission, MetricFamilyUserPermission

    user_model = get_user_model()
    for model in (
        MetricFamily,
        MetricFamilyUserPermission,
        MetricFamilyGroupPermission,
        user_model,
        Group,
    ):
        post_save.connect(bump_version, sender=model, dispatch_uid=f"tamma_access_{model}")
        post_delete.connect(bump_version, sender=model, dispatch_uid=f"tamma_access_d_{model}")
    m2m_changed.connect(
        bump_version, sender=user_model.groups.through, dispatch_uid="tamma_access_groups"
    )

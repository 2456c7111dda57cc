"""The one place label values are judged before they reach an instrument.

Every recording path (receivers, ``record``, the ingest API) passes here on its first
sight of a label combination:

1. a free-form value that looks like personal data or a secret is replaced by the
   redacted value (``redaction``); each value is made safe: a short string of
   ``[A-Za-z0-9_.:/+-]`` (lower case for closed vocabularies), so no input (a lone
   surrogate, a newline, a quote) can break the exposition;
2. closed labels keep only their vocabulary; other values fold to ``other``;
3. free-form labels admit new values up to their cap, then fold;
4. a family admits new label combinations up to its series cap; past it, events go to
   one overflow series (every label ``overflow``).

The event is always counted, so totals over labels equal the number of events; folds
and overflows are counted in self-metrics. Admissions live in the database, shared by
every process, so caps hold for the deployment; each process caches what it has seen,
so a known combination costs no query. Policy edits made in the admin reach every
process within ``POLICY_REFRESH_SECONDS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, Max

from . import budget, catalogue, redaction
from .conf import app_settings, on_reset

__all__ = [
    "DEFAULT_POLICIES",
    "FOLD_VALUE",
    "OVERFLOW_VALUE",
    "Guarded",
    "admit",
    "admitted_series",
    "connect_signals",
    "generation",
    "guard",
    "invalidate",
    "judge",
    "normalise",
    "reset",
    "rule",
    "seed_policies",
]

logger = logging.getLogger(__name__)

EMPTY_VALUE = "unknown"
FOLD_VALUE = "other"
OVERFLOW_VALUE = "overflow"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/+\-]+")
_LOCAL_LIMIT = 10_000  # refused keys remembered per scope
# Seconds the policy check may wait for the database before using the last snapshot.
POLICY_QUERY_SECONDS = 0.25


def normalise(value: Any, *, lowercase: bool = True) -> str:
    """Return ``value`` as a safe label value of bounded length."""
    text = value if isinstance(value, str) else str(value)
    text = text.strip().lower() if lowercase else text.strip()
    text = _UNSAFE.sub("_", text).strip("_")[: app_settings.MAX_LABEL_VALUE_LENGTH]
    return text or EMPTY_VALUE


@dataclass(frozen=True)
class Rule:
    closed: bool
    values: frozenset[str]
    max_values: int
    fold: str


# Seeded into LabelPolicy on migrate (missing rows only: admin edits are kept), from
# the catalogue: label -> closed vocabulary (tuple) or the cap of a free-form label (int).
DEFAULT_POLICIES: dict[str, tuple[str, ...] | int] = {
    **{label: tuple(values) for label, values in catalogue.VOCABULARIES.items()},
    **catalogue.VALUE_CAPS,
}


def seed_policies(**kwargs: Any) -> int:
    """Create the default LabelPolicy rows that do not exist yet; returns how many."""
    from .models import LabelPolicy

    existing = set(LabelPolicy.objects.values_list("label", "family"))
    rows = []
    items = [(("", label), spec) for label, spec in DEFAULT_POLICIES.items()]
    items += list(catalogue.FAMILY_VOCABULARIES.items())
    for (family, label), spec in items:
        if (label, family) in existing:
            continue
        if isinstance(spec, int):
            rows.append(LabelPolicy(label=label, family=family, closed=False, max_values=spec))
        else:
            rows.append(
                LabelPolicy(label=label, family=family, closed=True, allowed_values="\n".join(spec))
            )
    LabelPolicy.objects.bulk_create(rows)
    return len(rows)


class _State:
    """This process's snapshot of the policy and of what it has seen admitted."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.rules: dict[tuple[str, str], Rule] = {}
        self.caps: dict[str, int] = {}
        self.stamp: tuple | None = None
        self.checked_at = float("-inf")
        self.generation = 0
        self.admitted: dict[str, set[str]] = {}
        self.refused: dict[str, set[str]] = {}
        self.full: set[str] = set()


_state = _State()


def _version() -> tuple:
    from .models import LabelPolicy, MetricFamily

    policies = LabelPolicy.objects.aggregate(n=Count("id"), at=Max("updated_at"))
    families = MetricFamily.objects.aggregate(at=Max("updated_at"))
    return (policies["n"], policies["at"], families["at"])


def _load() -> tuple[dict, dict]:
    from .models import LabelPolicy, MetricFamily

    default_max = int(app_settings.DEFAULT_MAX_VALUES)
    rules = {
        (p.family, p.label): Rule(
            p.closed,
            p.values,
            p.max_values or default_max,
            normalise(p.fold_value) if p.fold_value else FOLD_VALUE,
        )
        for p in LabelPolicy.objects.all()
    }
    caps = dict(
        MetricFamily.objects.filter(max_series__isnull=False).values_list("name", "max_series")
    )
    return rules, caps


def _database_usable() -> bool:
    # Django forbids queries from async code; recording there uses the last snapshot.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def generation() -> int:
    """A number that changes whenever the policy does; checks the database now and then."""
    state = _state
    now = time.monotonic()
    if now - state.checked_at < app_settings.POLICY_REFRESH_SECONDS:
        return state.generation
    with state.lock:
        state.checked_at = now
        if not _database_usable() or budget.failed_recently():
            return state.generation
        try:
            # Every recording call may land here (the middleware's on each request, a
            # scrape's too): a locked or slow database must cost it little, so the check
            # has a short time limit (in a savepoint: the caller's work stays intact).
            with budget.time_limited(POLICY_QUERY_SECONDS) as before_query:
                before_query()
                stamp = _version()
                if stamp != state.stamp:
                    before_query()
                    state.rules, state.caps = _load()
        except (DatabaseError, budget.BudgetExhausted):
            logger.warning("tamma_metrics: label policy unavailable; using the last one")
            return state.generation
        if stamp != state.stamp:
            state.stamp = stamp
            state.generation += 1
            state.admitted.clear()
            state.refused.clear()
            state.full.clear()
    return state.generation


def invalidate(**kwargs: Any) -> None:
    """Look for policy changes on the next event (a signal handler)."""
    _state.checked_at = float("-inf")


@on_reset
def reset() -> None:
    """Forget everything this process knows (tests)."""
    global _state
    _state = _State()


def rule(family: str, label: str) -> Rule:
    """The policy of ``label`` in ``family``: family-specific first, then general."""
    rules = _state.rules
    found = rules.get((family, label)) or rules.get(("", label))
    if found is None:  # no row (yet, or deleted): the shipped default applies
        spec = catalogue.FAMILY_VOCABULARIES.get((family, label)) or DEFAULT_POLICIES.get(label)
        if isinstance(spec, tuple):
            return Rule(True, frozenset(spec), 0, FOLD_VALUE)
        return Rule(False, frozenset(), spec or int(app_settings.DEFAULT_MAX_VALUES), FOLD_VALUE)
    return found


def max_series(family: str) -> int:
    return _state.caps.get(family) or int(app_settings.DEFAULT_MAX_SERIES)


def lock_key(scope: str) -> int:
    """The PostgreSQL advisory lock key of an admission scope (a signed 64-bit hash)."""
    return int.from_bytes(
        hashlib.blake2b(scope.encode(), digest_size=8).digest(), "big", signed=True
    )


def _lock_scope(scope: str) -> None:
    # PostgreSQL: serialise admissions per scope so concurrent workers cannot both
    # take the last place. SQLite serialises writers by itself.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(scope)])


class _OverCap(Exception):
    pass


def _admit_in_database(scope: str, key: str, cap: int) -> bool:
    from .models import Admission

    # Insert first, then count: the write lock is taken by the first statement, so
    # SQLite never has to upgrade a read lock (which fails at once under contention),
    # and the count includes every admission committed before ours.
    try:
        with transaction.atomic():
            _lock_scope(scope)
            Admission.objects.create(scope=scope, key=key)
            if Admission.objects.filter(scope=scope).count() > cap:
                raise _OverCap
    except IntegrityError:
        return True  # admitted before, by this process or another
    except _OverCap:
        return False
    return True


def admit(
    scope: str,
    key: str,
    cap: int,
    deadline: budget.Deadline | None = None,
    *,
    patient: bool = False,
) -> bool:
    """Whether ``key`` is (or may now become) one of the at most ``cap`` keys of ``scope``.

    The database is asked within ``deadline`` (default POLICY_QUERY_SECONDS): a locked
    or slow database refuses the new key (the event still counts, folded) rather than
    holding up the caller's request. ``patient``: a row is being written (the state API),
    so the answer must not depend on the database's speed: it is asked without a time
    limit, and its failure is the caller's (the row's transaction fails, nothing written)."""
    state = _state
    admitted = state.admitted.setdefault(scope, set())
    if key in admitted:
        return True
    refused = state.refused.setdefault(scope, set())
    if key in refused or scope in state.full:
        return False
    if patient and _database_usable():
        ok = _admit_in_database(scope, key[:1000], cap)
    elif budget.failed_recently():
        return False  # the database just failed to answer: refuse at once, keep the cap
    elif _database_usable():
        if deadline is None:
            deadline = budget.Deadline(POLICY_QUERY_SECONDS)
        try:
            with budget.time_limited(deadline.remaining()) as before_query:
                before_query()
                ok = _admit_in_database(scope, key[:1000], cap)
        except (DatabaseError, budget.BudgetExhausted):
            # Refusing keeps the cap whatever happens; the event still counts (folded).
            logger.warning("tamma_metrics: admissions unavailable; refusing new %s", scope)
            return False
    else:
        ok = len(admitted) < cap  # async code cannot query: a per-process best effort
    if ok:
        admitted.add(key)
    else:
        if len(refused) >= _LOCAL_LIMIT:
            refused.clear()
        refused.add(key)
        if len(admitted) >= cap:
            state.full.add(scope)  # admissions only grow: no need to ask again
    return ok


@dataclass(frozen=True)
class Guarded:
    values: tuple[str, ...]
    folded: tuple[str, ...]  # names of the labels whose value was folded
    overflow: bool
    redacted: tuple[str, ...] = ()  # names of the labels whose value looked private


KEPT, FOLDED, REDACTED = "kept", "folded", "redacted"


def judge(
    family: str,
    label: str,
    raw_value: Any,
    deadline: budget.Deadline | None = None,
    *,
    patient: bool = False,
) -> tuple[str, str]:
    """The value ``label`` of ``family`` is recorded as, and whether it was kept, folded or
    redacted (the series cap aside). The state API stores this value in the row, so a row
    and the counter of its transition carry the same labels; it judges ``patient``ly, so
    the same item twice is judged the same however busy the database was."""
    policy = rule(family, label)
    if not policy.closed and redaction.private(raw_value):
        # Never admitted, never stored: not even in the admissions table.
        return normalise(app_settings.REDACTED_VALUE), REDACTED
    value = normalise(raw_value, lowercase=policy.closed)
    if policy.closed:
        allowed = value in policy.values
    else:
        allowed = admit(f"value:{label}", value, policy.max_values, deadline, patient=patient)
    if not allowed and value != policy.fold:
        return policy.fold, FOLDED
    return value, KEPT


def guard(family: catalogue.Family, raw: tuple[Any, ...], *, patient: bool = False) -> Guarded:
    """Apply normalisation, vocabularies, value caps and the series cap to one label set
    (``patient``: for a row's transition, see ``admit``)."""
    generation()
    # One event's admissions share one wait for the database, however many labels are new.
    deadline = budget.Deadline(POLICY_QUERY_SECONDS)
    values, folded, redacted = [], [], []
    for label, raw_value in zip(family.labels, raw, strict=True):
        value, verdict = judge(family.name, label, raw_value, deadline, patient=patient)
        values.append(value)
        if verdict == REDACTED:
            redacted.append(label)
        elif verdict == FOLDED:
            folded.append(label)
    series_key = "\x1f".join(values)
    scope, cap = f"series:{family.name}", max_series(family.name)
    if not admit(scope, series_key, cap, deadline, patient=patient):
        return Guarded((OVERFLOW_VALUE,) * len(values), tuple(folded), True, tuple(redacted))
    return Guarded(tuple(values), tuple(folded), False, tuple(redacted))


def admitted_series() -> dict[str, int]:
    """Admitted label combinations per family, from the database (for the series gauge)."""
    from .models import Admission

    rows = (
        Admission.objects.filter(scope__startswith="series:")
        .order_by()
        .values_list("scope")
        .annotate(n=Count("id"))
    )
    return {scope.removeprefix("series:"): n for scope, n in rows}


def connect_signals() -> None:
    """Edits in this process apply on its next event; other processes poll."""
    from django.db.models.signals import post_delete, post_save

    from .models import LabelPolicy, MetricFamily

    for model in (LabelPolicy, MetricFamily):
        post_save.connect(invalidate, sender=model, dispatch_uid=f"tamma_labels_{model}")
        post_delete.connect(invalidate, sender=model, dispatch_uid=f"tamma_labels_d_{model}")

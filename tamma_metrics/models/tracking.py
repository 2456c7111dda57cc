"""Which status a save replaced, learnt by the save's own UPDATE.

A model whose status changes are counted remembers the status it was loaded with, and
its UPDATE writes only where the row still has that status (``WHERE id = %s AND status
= %s``). One updated row proves the save moved the row from that status, whatever other
copies of it, other processes or other hosts did, so the transition is counted exactly
once and no query is added to the save. When the row no longer has it (another writer
moved it, a rolled-back transaction, a copy made without loading), the save reads the
stored status and tries again: each retry follows a write that another saver completed.
Inside ``atomic`` on PostgreSQL the UPDATE keeps the row locked until the transaction
ends, as a ``SELECT ... FOR UPDATE`` would.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Self

from django.db import models
from django.db.models.lookups import Exact
from django.db.models.sql.where import AND

_STORED = "_tamma_stored_status"  # the status the row had when last read or written
_REPLACED = "_tamma_replaced_status"  # the status the last save replaced, for post_save


class StatusTracked(models.Model):
    """A model with a ``status`` column whose changes the receivers count."""

    status: Any

    class Meta:
        abstract = True

    @classmethod
    def from_db(cls, db: str | None, field_names: Collection[str], values: Collection[Any]) -> Self:
        row = super().from_db(db, field_names, values)
        if "status" in row.__dict__:  # not deferred
            row.__dict__[_STORED] = row.__dict__["status"]
        return row

    def refresh_from_db(
        self,
        using: str | None = None,
        fields: Iterable[str] | None = None,
        from_queryset: models.QuerySet[Self] | None = None,
    ) -> None:
        super().refresh_from_db(using, fields, from_queryset)
        if fields is None or "status" in fields:
            self.__dict__[_STORED] = self.status

    def _do_update(
        self,
        base_qs: models.QuerySet[Self],
        using: str | None,
        pk_val: Any,
        values: Collection[tuple[models.Field[Any, Any], type[models.Model] | None, Any]],
        update_fields: Iterable[str] | None,
        forced_update: bool,
    ) -> bool:
        written = next((value for field, _, value in values if field.attname == "status"), None)
        if written is None:  # the status column is not written: no transition
            self.__dict__[_REPLACED] = self.status
            return super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update)
        expected = self.__dict__.get(_STORED)
        while True:
            if expected is None:
                stored = list(base_qs.filter(pk=pk_val).values_list("status", flat=True)[:1])
                if not stored:
                    return False  # no such row: Django inserts it
                expected = stored[0]
            if _where_status(base_qs.filter(pk=pk_val), expected)._update(values) > 0:  # type: ignore[attr-defined]
                self.__dict__[_REPLACED] = expected
                self.__dict__[_STORED] = written
                return True
            expected = None  # another writer moved it since: read what it left

    def _do_insert(
        self, manager: Any, using: Any, fields: Any, returning_fields: Any, raw: bool
    ) -> Any:
        inserted = super()._do_insert(  # type: ignore[misc]  # not in django-stubs
            manager, using, fields, returning_fields, raw
        )
        self.__dict__.pop(_REPLACED, None)
        self.__dict__[_STORED] = self.status
        return inserted


def replaced_status(row: models.Model) -> str | None:
    """The status the row's last save replaced (None for an insert); once per save."""
    replaced: str | None = row.__dict__.pop(_REPLACED, None)
    return replaced


def _where_status(rows: models.QuerySet[Any], status: str) -> models.QuerySet[Any]:
    """``rows.filter(status=status)`` at a third of its cost (``filter`` resolves the
    name through the lookup machinery on every save)."""
    query = rows.query
    column = query.model._meta.get_field("status").get_col(query.base_table)  # type: ignore[union-attr]
    query.where.add(Exact(column, status), AND)
    return rows

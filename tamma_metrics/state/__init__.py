"""Tamma's state, written by natural key: issues, pull requests, approvals, escalations
and loop heartbeats. Rows are the truth; the models' receivers count their transitions.

- ``kinds``: each kind's key, lifecycle, counted labels and what stops changing;
- ``writer``: one transaction per batch, an ``Outcome`` per item.

Nothing here knows HTTP: the API validates items and hands them over (docs/state.md).
"""

from .kinds import KINDS, Kind
from .writer import Outcome, apply

__all__ = ["KINDS", "Kind", "Outcome", "apply"]

"""Who called, and whose credentials were verified recently.

Each successful authentication is remembered in this process under an HMAC of the
presented credentials (the Authorization header, or the session cookie) with a key that
never leaves the process. So only the same credentials find the entry: not the stored
token digest (exporter-toolkit's CVE-2022-46146 let a cached hash pass as a password),
not another process. While the database is up every request is checked against it
(revocation shows at once); only when it fails to answer in time does an entry verified
within RECENTLY_VERIFIED_SECONDS stand in, with the families it could see then.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..catalogue import Visibility
from ..conf import app_settings, on_reset

__all__ = [
    "Caller",
    "NoFamilies",
    "NotAuthenticated",
    "Throttled",
    "Unavailable",
    "forget",
    "forget_verified",
    "recently_verified",
    "remember",
    "remember_seen",
]


class NotAuthenticated(Exception):
    """No usable credentials: answer 401 with the challenge."""


class NoFamilies(Exception):
    """Authenticated, but no family is visible: answer 403."""


class Unavailable(Exception):
    """The database did not answer within the budget and no recent verification vouches
    for the caller: answer 503 with Retry-After, never a 500 or a hang."""

    retry_after = 5


class Throttled(Exception):
    """Too many requests: answer 429 with Retry-After."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass(frozen=True)
class Caller:
    user: Any | None  # None when authentication is switched off
    method: str  # token, basic, session or open
    # An HMAC of the credentials presented: the key of what is remembered of them.
    fingerprint: bytes | None = None


_RECENT_LIMIT = 1_000
_recent: OrderedDict[bytes, tuple[float, Caller, str, Visibility | None]] = OrderedDict()
_recent_lock = threading.Lock()


def remember(caller: Caller, principal: str) -> None:
    """``caller`` was verified just now (against the database)."""
    if caller.fingerprint is None:
        return
    with _recent_lock:
        _recent[caller.fingerprint] = (time.monotonic(), caller, principal, None)
        _recent.move_to_end(caller.fingerprint)
        while len(_recent) > _RECENT_LIMIT:
            _recent.popitem(last=False)


def remember_seen(caller: Caller, seen: Visibility) -> None:
    """Add what the verified caller may see to its entry (made by ``remember``)."""
    if caller.fingerprint is None:
        return
    with _recent_lock:
        entry = _recent.get(caller.fingerprint)
        if entry is not None:
            _recent[caller.fingerprint] = (*entry[:3], seen)


def recently_verified(fingerprint: bytes | None) -> tuple[Caller, str, Visibility | None] | None:
    """(caller, principal, what it could see) of credentials verified within
    RECENTLY_VERIFIED_SECONDS, or None."""
    if fingerprint is None:
        return None
    with _recent_lock:
        entry = _recent.get(fingerprint)
    if entry is None:
        return None
    at, caller, principal, seen = entry
    if time.monotonic() - at > float(app_settings.RECENTLY_VERIFIED_SECONDS):
        return None
    return caller, principal, seen


def forget(fingerprint: bytes) -> None:
    """Credentials refused (revoked, expired): not even an outage brings them back."""
    with _recent_lock:
        _recent.pop(fingerprint, None)


@on_reset
def forget_verified() -> None:
    """Forget every remembered verification (tests; a password or token change)."""
    with _recent_lock:
        _recent.clear()

"""Every "who may see this" decision, in one package.

- ``authentication``: who is calling, over HTTP (tokens, basic, sessions, throttles and
  the API's DRF classes);
- ``visibility``: which families a caller may see (guardian permissions, cached);
- ``callers``: the caller, the refusals, and credentials verified recently (what
  answers while the database does not);
- ``families``: the catalogue as the ``MetricFamily`` rows permissions are granted on.

The scrape never imports this package: the view hands it a ``catalogue.Visibility``.
"""

from .authentication import (
    CHALLENGE,
    CanIngest,
    CanWriteState,
    PrincipalThrottle,
    TokenAuthentication,
    authenticate,
    host_identity,
    share,
    worker_processes,
)
from .callers import Caller, NoFamilies, NotAuthenticated, Throttled, Unavailable, forget_verified
from .families import sync_metric_families
from .visibility import (
    VIEW_PERMISSION,
    bump_version,
    connect_signals,
    may_create_token_for,
    may_grant,
    visibility,
    visible_families,
)

__all__ = [
    "CHALLENGE",
    "VIEW_PERMISSION",
    "CanIngest",
    "CanWriteState",
    "Caller",
    "NoFamilies",
    "NotAuthenticated",
    "PrincipalThrottle",
    "Throttled",
    "TokenAuthentication",
    "Unavailable",
    "authenticate",
    "bump_version",
    "connect_signals",
    "forget_verified",
    "host_identity",
    "may_create_token_for",
    "may_grant",
    "share",
    "sync_metric_families",
    "visibility",
    "visible_families",
    "worker_processes",
]

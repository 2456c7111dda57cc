"""Free-form label values that look like personal data or secrets never become labels.

A label value is stored by Prometheus for as long as it keeps data, and shown to every
role that may see the family: an escalation's ``reason`` must not carry an email address
or an API key there. The label policy (``labels.guard``) asks :func:`private` about each
free-form value before it admits it; a value that matches is recorded as ``REDACTED_VALUE``
and counted in ``tamma_metrics_label_redactions_total{family, label}``. The value itself
is never logged.

The patterns look at the raw value, before normalisation would blur an ``@`` or a ``=``.
Projects add their own with ``REDACT_LABEL_PATTERNS`` (regular expressions).
"""

from __future__ import annotations

import re
from functools import lru_cache

from .conf import app_settings

__all__ = [
    "patterns",
    "private",
]

# What is looked for, and why each is here.
BUILT_IN_PATTERNS: dict[str, str] = {
    "email address": r"[^\s@<>()\"',;:]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "URL with credentials": r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s@]+@",
    "URL with a query string": r"[A-Za-z][A-Za-z0-9+.-]*://[^\s?#]*\?[^\s#]+",
    "secret assignment": (
        r"(?i:\b(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|"
        r"client[_-]?secret)\s*[=:]\s*\S{4,})"
    ),
    "bearer or basic credentials": r"(?i:\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,})",
    "API key (sk-, pk-, rk- and the like)": r"\b(?:sk|pk|rk)[-_][A-Za-z0-9_-]{16,}",
    "GitHub token": r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
    "GitLab token": r"\bgl(?:pat|dt|rt|ptt)-[A-Za-z0-9_-]{16,}",
    "Slack token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "AWS access key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "Google API key": r"\bAIza[0-9A-Za-z_-]{30,}",
    "JSON web token": r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "tamma token": r"\btmm_[A-Za-z0-9]+_[A-Za-z0-9_-]{16,}",
}
# A long run of key-like characters (a key, a hash, a session id) when it looks random:
# a fifth of it digits, or upper case, lower case and digits mixed. A long hyphenated
# name ("feature-add-retries-2") does not.
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")


_BUILT_IN = re.compile("|".join(f"(?:{p})" for p in BUILT_IN_PATTERNS.values()))


@lru_cache(maxsize=8)
def _compiled(extra: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    # Each on its own: a project's pattern may carry global flags.
    return (_BUILT_IN, *(re.compile(pattern) for pattern in extra))


def patterns() -> tuple[re.Pattern[str], ...]:
    """The built-in patterns and the project's ``REDACT_LABEL_PATTERNS``."""
    return _compiled(tuple(app_settings.REDACT_LABEL_PATTERNS or ()))


def private(value: object) -> bool:
    """Whether ``value`` looks like personal data or a secret."""
    text = value if isinstance(value, str) else str(value)
    if any(pattern.search(text) for pattern in patterns()):
        return True
    return any(_random(run) for run in _LONG_RUN.findall(text))


def _random(run: str) -> bool:
    digits = sum(c.isdigit() for c in run)
    upper = sum(c.isupper() for c in run)
    lower = sum(c.islower() for c in run)
    return digits * 5 >= len(run) or (upper >= 4 and lower >= 4 and digits >= 2)

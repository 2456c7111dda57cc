"""Free-form label values that look like personal data or secrets never become labels.

A label value is stored by Prometheus for as long as it keeps data, and shown to every
role that may see the family: an escalation's ``reason`` must not carry an email address
or an API key there. The label policy (``labels.guard``) asks :func:`private` about each
free-form value before it admits it; a value that matches is recorded as ``REDACTED_VALUE``
and counted in ``tamma_metrics_label_redactions_total{family, label}``. The value itself
is never logged.

The patterns look at the raw value, before normalisation would blur an ``@`` or a ``=``.
Projects add their own with ``REDACT_LABEL_PATTERNS`` (regular expressions).

Some personal data has a shape that also fits harmless values (a version is dotted numbers,
a model id has dotted words), so those shapes are only candidates, confirmed by a second
look: a digit count (phone numbers), the Luhn checksum (card numbers), the ``ipaddress``
module (IP addresses) or a list of technical words (``first.last`` names). A label value
wrongly redacted costs one series; a name or a phone number in Prometheus stays there, so
where the two conflict these rules lean to redacting. docs/labels.md lists what passes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache

from .conf import app_settings

__all__ = [
    "BUILT_IN_CHECKS",
    "BUILT_IN_PATTERNS",
    "NOT_NAMES",
    "findings",
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
    # A path names a machine's layout and often a person (/home/jane, C:\Users\jane).
    # Only absolute ones: "review/feature-123" (an environment) or "ci/cd" is no path, and
    # "https://host/docs" is no path either (the slash follows a word or a slash).
    "absolute file path": r"(?<![\w.~/\\-])/[\w.~$%+@-]",
    "home directory path": r"(?<![\w.~/\\-])~[\w.-]*/",
    "Windows file path": r"(?<![\w.~/\\-])(?:[A-Za-z]:[\\/][^\s]|\\\\[\w.$-]+\\)",
}
# A long run of key-like characters (a key, a hash, a session id) when it looks random:
# a fifth of it digits, or upper case, lower case and digits mixed. A long hyphenated
# name ("feature-add-retries-2") does not.
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")

# -- shapes confirmed by a second look ----------------------------------------------------
# Each candidate stands alone: no digit or dot glued to either end (nor a letter, for most),
# so a part of a version ("1.2.3.4.5"), of a date or of a longer number is no candidate.
_DIGITS = re.compile(r"\d")
_DATE = re.compile(r"\d{1,2}([./-])\d{1,2}\1(?:19|20)\d{2}")
_ISO_DATE = re.compile(r"(?:19|20)\d{2}-\d{2}-\d{2}")

# International: +CC or 00CC, then 8 to 15 digits in all (E.164) with single separators.
# Not after a word or a dot: "1.0.0+20130313144700" is a version's build metadata; 00 not
# after a dash either, and a country code never starts with 0 ("run-0001-0002").
_PHONE_INTERNATIONAL = re.compile(
    r"(?:(?<![\w.+])\+|(?<![\w.+-])00(?=\s?[1-9]))\s?(?:\(\d{1,4}\)|\d)"
    r"(?:[\s.-]?(?:\(\d{1,4}\)|\d)){6,18}(?![\w]|[.-]\d)"
)
# North American: 555-123-4567, 555.123.4567, 555 123 4567, (555) 123-4567, 1-555-...;
# also after a dash (oncall-555-123-4567): no version or date has this shape.
_PHONE_NANP = re.compile(
    r"(?<![\w.+])(?:1[-.\s])?(?:\(\d{3}\)\s?|\d{3}([-.\s]))\d{3}(?(1)\1|[-.\s])\d{4}"
    r"(?![\w]|[.-]\d)"
)
# With a trunk prefix 0 (most of Europe, the UK, Australia...): 020 7946 0958,
# 06 12 34 56 78, 0612345678, 030/1234567, 0151 12345678; 9 to 12 digits. Not after a
# dash: "gpt-4-0613" or "run-0001-0002-0003" are ids.
_PHONE_NATIONAL = re.compile(r"(?<![\w.+-])0\d{1,4}(?:[-.\s/]?\d{2,4}){1,5}(?![\w]|[.-]\d)")


def _phone_number(text: str) -> bool:
    for match in _PHONE_INTERNATIONAL.finditer(text):
        if 8 <= len(_DIGITS.findall(match[0])) - match[0].startswith("00") * 2 <= 15:
            return True
    if _PHONE_NANP.search(text):
        return True
    for match in _PHONE_NATIONAL.finditer(text):
        # A day, month and year ("08-12-2026 10") has as many digits as a number.
        if 9 <= len(_DIGITS.findall(match[0])) <= 12 and not _DATE.search(match[0]):
            return True
    return False


# 13 to 19 digits, optionally grouped by spaces or dashes (4111 1111 1111 1111).
_CARD = re.compile(r"(?<![\d.])\d(?:[ -]?\d){12,18}(?!\d|[.-]\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        n = int(char)
        if position % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card_number(text: str) -> bool:
    # The checksum leaves about one 16-digit number in ten: an order id or a timestamp in
    # milliseconds may be redacted too, and should not be a label anyway (unbounded).
    return any(
        _luhn(re.sub(r"\D", "", match[0])) and not _ISO_DATE.search(match[0])
        for match in _CARD.finditer(text)
    )


_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)")
# Hex groups and at least two colons; the module decides ("10:00:00" is a time, not an
# address). Without a decimal digit ("dead::beef", "abc::def") it is taken for code.
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:)"  # two colons ahead
    r"[0-9A-Fa-f:.]+(?:%[\w.-]+)?(?!\w)"
)


def _ip_address(text: str) -> bool:
    for match in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(match[0])  # refuses 256.1.1.1 and leading zeros
        except ValueError:
            continue
        return True
    for match in _IPV6.finditer(text):
        candidate = match[0].split("%")[0].rstrip(".")
        if not _DIGITS.search(candidate):
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        return True
    return False


# Person names as companies write them in logins and addresses: first.last. Two words of
# letters joined by one dot, standing alone or between spaces, slashes, colons, brackets or
# quotes: not glued to a dash, an underscore, a digit or another dot, so "gpt-4.1",
# "anthropic.claude-3-5-sonnet", "v1.2", "us-east-1.prod" and "a.b.c" never qualify.
# What still looks like a name but is a file, a host or a framework is let through when
# either word is in NOT_NAMES. Not caught: "jane.doe-fix", "jane.m.doe", "jane_doe",
# "Jane Doe" (no shape tells them from technical names).
_NAME = re.compile(r"(?<![\w.@-])([^\W\d_]{2,})\.([^\W\d_]{2,})(?![\w@-]|\.\w)")
_NOT_NAMES_BY_REASON: dict[str, str] = {
    "environments and regions: prod.eu, staging.us, web.prod": (
        "prod production stage staging dev develop development test tests testing qa uat "
        "preprod preview review demo sandbox canary beta alpha live local localhost internal "
        "release main master default stable latest nightly edge hotfix feature blue green "
        "eu us uk ca au de fr jp apac emea asia east west north south central global"
    ),
    "top-level domains: acme.io, example.com, asp.net, socket.io": (
        "com org net io ai co app cloud tech info biz gov edu me sh tv cc xyz site online"
    ),
    "file extensions: setup.py, package.json, index.html, Dockerfile.prod": (
        "js ts jsx tsx mjs cjs py rb go rs java kt php cs cpp hpp swift scala bash json yaml "
        "yml toml xml html htm css scss md rst txt csv log lock cfg conf config ini env sql "
        "proto graphql svg png jpg gif pdf zip tar gz tgz exe dll so dylib bin wasm vue svelte"
    ),
    "services, platforms, vendors and agents: api.github, node.js, anthropic.claude": (
        "api apis web www svc service server client cluster node pod kube kubernetes helm aws "
        "gcp azure github gitlab bitbucket gitea git ci cd db cache redis postgres mysql queue "
        "worker agent backend frontend gateway proxy auth admin core lib src utils common http "
        "https grpc docker compose anthropic claude openai gpt google gemini vertex meta llama "
        "amazon titan nova cohere mistral bedrock ollama deepseek qwen bot tool runner planner "
        "reviewer orchestrator"
    ),
    "outcomes, as dotted reason codes: deployment.failed, budget.exceeded": (
        "error errors failed failure timeout success passed denied exceeded invalid missing "
        "blocked limit opened closed merged created updated deleted started finished"
    ),
}
NOT_NAMES: frozenset[str] = frozenset(
    word for words in _NOT_NAMES_BY_REASON.values() for word in words.split()
)


def _person_name(text: str) -> bool:
    return any(
        first.lower() not in NOT_NAMES and last.lower() not in NOT_NAMES
        for first, last in _NAME.findall(text)
    )


# Shapes that need more than a regular expression, and why each is here.
BUILT_IN_CHECKS: dict[str, Callable[[str], bool]] = {
    "phone number": _phone_number,
    "payment card number": _card_number,
    "IP address": _ip_address,
    "person name (first.last)": _person_name,
}

_BUILT_IN = re.compile("|".join(f"(?:{p})" for p in BUILT_IN_PATTERNS.values()))
_BY_NAME = {name: re.compile(p) for name, p in BUILT_IN_PATTERNS.items()}


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
    if any(check(text) for check in BUILT_IN_CHECKS.values()):
        return True
    return any(_random(run) for run in _LONG_RUN.findall(text))


def findings(value: object) -> list[str]:
    """The names of the built-in rules ``value`` matches (what ``private`` would act on,
    the project's patterns aside): for tests and for explaining a redaction."""
    text = value if isinstance(value, str) else str(value)
    found = [name for name, pattern in _BY_NAME.items() if pattern.search(text)]
    found += [name for name, check in BUILT_IN_CHECKS.items() if check(text)]
    if any(_random(run) for run in _LONG_RUN.findall(text)):
        found.append("long random run")
    return found


def _random(run: str) -> bool:
    digits = sum(c.isdigit() for c in run)
    upper = sum(c.isupper() for c in run)
    lower = sum(c.islower() for c in run)
    return digits * 5 >= len(run) or (upper >= 4 and lower >= 4 and digits >= 2)

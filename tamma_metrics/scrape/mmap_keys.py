"""The keys of prometheus_client's multiprocess files, parsed once per process.

A key is the JSON text ``[metric, sample, {labels}, help]`` that ``mmap_key`` writes
with ``json.dumps(..., sort_keys=True)``. Parsing them is most of a first scrape's cost,
and most of them are histogram buckets: keys that differ from their series' other
buckets only in ``"le": "<bound>"``. So a bucket key is checked against its series'
*identity* (the same key without the ``le`` pair, parsed and validated once): when the
key is byte for byte the canonical JSON of that identity plus the ``le`` pair, it is
exactly what ``json.loads`` would read, without parsing it. Any other key (escapes,
other spacing, foreign writers) is parsed by ``json.loads``.

Keys and identities are recognised again by a 128-bit BLAKE2b digest of their text, not
the text: the text is most of what an index of a large folder would hold. Not Python's
``hash()``: 64 bits, and with PYTHONHASHSEED fixed, label values chosen by an outsider
(a repository name in a webhook) could be made to collide, crediting one series' value
to another.

What would make ``MultiProcessCollector`` fail the whole scrape (invalid JSON, a
non-string, a lone surrogate, an invalid metric name) raises :class:`BrokenKey`; the
reader then skips the file and counts it.
"""

from __future__ import annotations

import hashlib
import json
import re
from sys import intern
from typing import Any, Literal

from prometheus_client.metrics_core import Metric

LE_MARK = b'"le": "'
# Bounds as floatToGoString writes them (digits, ".", "e", "+", "-", "Inf", "NaN"):
# nothing that JSON would escape.
_BOUND = re.compile(rb"[0-9A-Za-z.+\-]+")
_LIMIT = 200_000  # distinct label pairs and sets kept for sharing; then they start again

_valid_names: set[str] = set()  # metric names the library's validation accepted
_pairs: dict[tuple[str, str], tuple[str, str]] = {}
_sets: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}

Bound = tuple[tuple[str, str], float | None]  # a bucket's ("le", text) pair and its value


def digest(text: bytes) -> bytes:
    """What a key or an identity is recognised by (see the module's docstring)."""
    return hashlib.blake2b(text, digest_size=16).digest()


class BrokenKey(Exception):
    """A key prometheus_client could not merge."""


class Key:
    """One distinct key: ``labels`` sorted by name, as the library keys its samples;
    a bucket also keeps its bound as a float and its labels without ``le``.

    Label pairs and a bucket's label set are shared between keys: most recur
    (providers, models, bounds), and fewer objects are faster to build and collect.
    A bucket read through its identity keeps neither a digest nor its full label tuple
    (``labels`` builds it when asked): most keys of a folder are buckets.
    """

    __slots__ = ("digest", "identity", "metric_name", "name", "_labels", "help", "le",
                 "bound", "without_le")  # fmt: skip

    def __init__(
        self,
        digest: bytes | None,
        metric_name: str,
        name: str,
        labels: tuple[tuple[str, str], ...] | None,
        help_text: str,
        le: float | None = None,
        without_le: tuple[tuple[str, str], ...] | None = None,
        identity: Identity | None = None,
        bound: Bound | None = None,
    ) -> None:
        self.digest = digest  # digest() of the text; None for a bucket read through its identity
        self.identity = identity
        self.metric_name = metric_name
        self.name = name
        self._labels = labels
        self.help = help_text
        self.le = le
        self.bound = bound
        self.without_le = without_le

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        if self._labels is not None:
            return self._labels
        # A bucket read through its identity: it has identity and bound.
        return self.identity.with_le(self.bound[0])  # type: ignore[union-attr, index]


def clear() -> None:
    """Forget the shared tables (benchmarks of a first scrape)."""
    _valid_names.clear()
    _pairs.clear()
    _sets.clear()
    _bounds.clear()


def parse(raws: list[bytes], identities: dict[bytes, Identity | None]) -> list[Key]:
    """The keys of ``raws``, in order; raises BrokenKey on the first broken one.

    ``identities`` is the caller's table of bucket series already seen (digest of the
    identity's text to Identity, None when it cannot be used); it is filled as keys are
    read.
    """
    if len(_pairs) + len(_sets) > _LIMIT:
        clear()
    keys = []
    for raw in raws:
        key = None
        if LE_MARK in raw and b"\\" not in raw:
            key = _bucket(raw, identities)
        keys.append(key or _parse_one(raw))
    return keys


def _parse_one(raw: bytes) -> Key:
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise BrokenKey(f"unreadable key {raw[:80]!r}") from exc
    metric_name, name, labels, help_text = _validated(raw, parsed)
    items = sorted(labels.items())
    pairs = tuple(map(_pairs.setdefault, items, items))
    if "le" not in labels:
        return Key(digest(raw), metric_name, name, pairs, help_text)
    without = tuple([pair for pair in pairs if pair[0] != "le"])
    without = _sets.setdefault(without, without)
    return Key(digest(raw), metric_name, name, pairs, help_text, _float(labels["le"]), without)


def _validated(raw: bytes, parsed: Any) -> tuple[str, str, dict[str, str], str]:
    try:
        metric_name, name, labels, help_text = parsed
        # str.join takes nothing but strings, and encoding fails on a lone surrogate
        # (which JSON escapes can spell): two C calls check every string of the key.
        "".join([metric_name, name, help_text, *labels, *labels.values()]).encode()
    except (ValueError, TypeError, AttributeError) as exc:  # UnicodeError is a ValueError
        raise BrokenKey(f"unreadable key {raw[:80]!r}") from exc
    # The same few names and help texts recur in every key: keep one copy of each.
    metric_name, name, help_text = intern(metric_name), intern(name), intern(help_text)
    if metric_name not in _valid_names:
        try:
            Metric(metric_name, help_text, "gauge")  # the library's name validation
        except ValueError as exc:
            raise BrokenKey(str(exc)) from exc
        _valid_names.add(metric_name)
    return metric_name, name, labels, help_text


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # a broken file, if the key belongs to a histogram


class Identity:
    """A bucket's series: its key without ``le``, parsed, and where ``le`` goes."""

    __slots__ = ("digest", "metric_name", "name", "help", "without_le", "before", "at", "case")

    def __init__(self, identity: bytes, parsed: object) -> None:
        self.digest = digest(identity)
        self.metric_name, self.name, labels, self.help = _validated(identity, parsed)
        if "le" in labels:
            raise ValueError("not a bucket's identity")
        # Canonical (what json.dumps(sort_keys=True) writes: ASCII, and no escapes since
        # the key holds no backslash) or no fast path. Then every string is written as
        # it is, and byte offsets follow from string lengths.
        if json.dumps(parsed, sort_keys=True).encode() != identity:
            raise ValueError("not canonical")
        items = sorted(labels.items())
        base = tuple(map(_pairs.setdefault, items, items))
        self.without_le = _sets.setdefault(base, base)
        self.before = sum(1 for name, _ in items if name < "le")  # le's index in labels
        start = len(self.metric_name) + len(self.name) + len('["", "", {')
        # '"name": "value", ' is 8 bytes more than name and value.
        offset = start + sum(len(name) + len(value) + 8 for name, value in items[: self.before])
        if self.before < len(items):  # '"le": "X", ' before the next pair
            self.at, self.case = offset, _FOLLOWED
        elif items:  # ', "le": "X"' after the last pair
            self.at, self.case = offset - 2, _PRECEDED
        else:  # '{"le": "X"}'
            self.at, self.case = start, _ALONE

    def with_le(self, le_pair: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        """A bucket's labels, sorted by name: the base with ``le_pair`` in its place."""
        base, before = self.without_le, self.before
        return base[:before] + (le_pair,) + base[before:]


_FOLLOWED, _PRECEDED, _ALONE = range(3)
_bounds: dict[bytes, Bound] = {}


def _bucket(raw: bytes, identities: dict[bytes, Identity | None]) -> Key | None:
    """A bucket key from its identity, or None (the caller then parses it).

    ``raw`` is the identity with the ``le`` pair cut out at ``at`` in the form of
    ``case``: when those are where and how the canonical JSON has it, ``raw`` is the
    canonical JSON of the identity's key plus ``le``, byte for byte.
    """
    start = raw.find(LE_MARK)
    value_end = raw.find(b'"', start + len(LE_MARK))
    if value_end < 0:
        return None
    bound = raw[start + len(LE_MARK) : value_end]
    end = value_end + 1
    if raw[end : end + 2] == b", ":
        case, at, identity = _FOLLOWED, start, raw[:start] + raw[end + 2 :]
    elif raw[start - 2 : start] == b", ":
        case, at, identity = _PRECEDED, start - 2, raw[: start - 2] + raw[end:]
    else:
        case, at, identity = _ALONE, start, raw[:start] + raw[end:]
    known = digest(identity)
    info: Identity | None | Literal[False] = identities.get(known, False)
    if info is False:
        try:
            info = Identity(identity, json.loads(identity))
        except (ValueError, BrokenKey):
            info = None
        identities[known] = info
    if info is None or info.at != at or info.case != case:
        return None
    le = _bounds.get(bound)
    if le is None:
        if not _BOUND.fullmatch(bound) or len(_bounds) > _LIMIT:
            return None
        text = bound.decode("ascii")
        le = _bounds[bound] = (_pairs.setdefault(("le", text), ("le", text)), _float(text))
    return Key(None, info.metric_name, info.name, None, info.help, le[1], info.without_le, info, le)

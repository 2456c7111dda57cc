"""An incremental reader of the multiprocess folder: a scrape costs what changed.

prometheus_client's ``MultiProcessCollector`` parses every key of every file (a JSON
document each) and re-renders every line on every scrape. But a file only ever grows:
a key, once written, keeps its place, and only the 8-byte values behind it change. So
each serving process keeps an index per file (inode, how far it was parsed, each entry's
parsed key and value offset) and a layout of the merged output (which entries feed
which output series, in the library's order). A scrape then:

1. lists the folder (a new inode under a known name is a new file: pid reuse, or the
   archive step's rename), parses only entries appended since the last scrape (the
   file's ``used`` header says how far it is written) and forgets files that are gone;
2. rebuilds the layout only when the files or their keys changed;
3. reads the values at their known offsets in one C call per file, compares them with
   the last scrape's bit for bit, and recomputes and re-renders only the output series
   fed by values that changed.

The merge rules (sums in file order from 0.0, gauge modes, cumulative histogram
buckets, the two-level ordering of samples) are ``MultiProcessCollector.merge``'s,
mirrored step for step; tests/test_fast_scrape.py compares the bytes with the library
on random folders. Files are read through a read-only ``mmap``; a file that shrinks in
place (nothing in prometheus_client does that) is noticed by ``fstat`` before any read.
"""

from __future__ import annotations

import contextlib
import gc
import math
import mmap
import os
import struct
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from operator import gt, itemgetter, lt
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from . import encoder, mmap_keys, multiprocess
from .encoder import Format
from .mmap_keys import Bound, BrokenKey, Identity, Key, digest

if TYPE_CHECKING:
    from typing import Protocol

    _Labels = tuple[tuple[str, str], ...]

    class _Unit(Protocol):
        """What computes output values from file values: _Sum, _Buckets, _MostRecent."""

        def compute(self) -> None: ...

        def bind(self) -> None: ...


_INT = struct.Struct("i")
_BLOCK = 64  # values compared per slice when looking for what changed
_PID_LESS_MODES = frozenset(
    ("min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent")
)


class _Broken(BrokenKey):
    """A file prometheus_client could not merge: it is skipped and counted."""


@dataclass(frozen=True)
class _FileName:
    typ: str  # counter, gauge, histogram, summary
    mode: str  # the gauge's multiprocess mode, "" for other types
    pid: str  # what the library takes as the pid label of gauges


def _file_name(name: str) -> _FileName | None:
    if not multiprocess.FILE_NAME.match(name):
        return None
    parts = name.split("_")
    if parts[0] == "gauge":
        return _FileName("gauge", parts[1], parts[2][:-3])
    return _FileName(parts[0], "", "")


class _File:
    """One indexed file: its keys, where their values are, and their bits last read.

    Values are not copied: the layout's units read them from the mapping when they
    compute, and ``raw`` (the words read at the last scrape) says which changed.
    """

    __slots__ = (
        "name", "path", "kind", "inode", "fd", "mm", "doubles", "words", "used",
        "keys", "bounds", "positions", "stride", "getter", "raw", "units",
    )  # fmt: skip

    def __init__(self, path: str, name: str, kind: _FileName, inode: int) -> None:
        self.name, self.path, self.kind, self.inode = name, path, kind, inode
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.mm: mmap.mmap | None = None
        self.doubles: memoryview[float] | None = None
        self.words: memoryview[int] | None = None
        self.used = 8
        # Each entry's key; a bucket read through its series' identity is that identity,
        # and its bound is in ``bounds`` (None for a Key): no object per bucket key.
        self.keys: list[Key | Identity] = []
        self.bounds: list[Bound | None] = []
        # Index of each entry's value in ``doubles``. The same int objects are the
        # getter's and the units' references: one object per entry, not three.
        self.positions: list[int] = []
        # Gauges need each entry's timestamp as well (mostrecent modes).
        self.stride = 2 if kind.typ == "gauge" else 1
        self.getter: Callable[[Any], tuple[Any, ...]] | None = None
        self.raw: tuple[int, ...] = ()  # the value words last read, compared bit for bit
        self.units: list[Any] = []  # the layout unit each value feeds (None before one)

    def close(self) -> None:
        self._unmap()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _unmap(self) -> None:
        for view in (self.doubles, self.words):
            if view is not None:
                view.release()
        if self.mm is not None:
            self.mm.close()
        self.mm = self.doubles = self.words = None

    def _map(self, size: int) -> None:
        self._unmap()
        length = size - size % 8
        self.mm = mmap.mmap(self.fd, length, access=mmap.ACCESS_READ)
        view = memoryview(self.mm)
        self.doubles = view.cast("d")
        self.words = view.cast("q")
        view.release()

    def signature(self) -> tuple[int, int, int]:
        return multiprocess.signature(os.fstat(self.fd))

    def refresh(self, keys: dict[bytes, Key], identities: dict[bytes, Identity | None]) -> bool:
        """Parse what was appended since the last call; True when keys were added.

        Raises _Broken when the file is corrupt, ``_Shrunk`` when it must be read anew.
        """
        size = os.fstat(self.fd).st_size
        if self.mm is None:
            if size < 8:
                raise _Shrunk
            self._map(size)
        elif size < len(self.mm):
            raise _Shrunk  # checked before touching the mapping: past the end is SIGBUS
        # (Mapped from here on: mypy does not see that _map() sets self.mm.)
        used = _INT.unpack_from(self.mm, 0)[0]  # type: ignore[arg-type]
        # The size after ``used``: a writer grows the file before it writes past the old
        # end, and writes ``used`` last, so a ``used`` read first fits the size read next.
        size = os.fstat(self.fd).st_size
        if size < len(self.mm):  # type: ignore[arg-type]
            raise _Shrunk
        if used < 8:
            used = 8  # no entry yet (a file being created); the library reads none either
        if used > size:
            raise _Broken("used is past the end of the file")
        if used < self.used:
            raise _Shrunk
        if used == self.used:
            return False
        if used > len(self.mm):  # type: ignore[arg-type]
            self._map(size)  # the writer grew the file past what we mapped
        self._parse(used, keys, identities)
        return True

    def _parse(
        self, used: int, keys: dict[bytes, Key], identities: dict[bytes, Identity | None]
    ) -> None:
        data: mmap.mmap
        data, pos = self.mm, self.used  # type: ignore[assignment]  # refresh() mapped it
        unpack = _INT.unpack_from
        # Keys, and the text of those still to parse (``__class__ is bytes`` tells them
        # apart, which mypy does not follow): all Keys once parsed below.
        new_keys: list[Any] = []
        new_positions = []
        unknown = []
        while pos < used:
            length = unpack(data, pos)[0]
            if length < 0 or length + pos > used:
                raise _Broken("an entry runs past the used size")
            pos += 4
            raw = data[pos : pos + length]
            pos += length + (8 - (length + 4) % 8)
            if pos + 16 > used:
                raise _Broken("an entry's value runs past the used size")
            key = keys.get(digest(raw))
            if key is None:
                unknown.append(raw)
                new_keys.append(raw)
            else:
                new_keys.append(key)
            new_positions.append(pos >> 3)
            pos += 16
        if unknown:
            parsed = mmap_keys.parse(unknown, identities)
            # Buckets are not kept by their digest (most keys are buckets): their series'
            # identity is, and reads them again at a fraction of a JSON parse.
            keys.update((key.digest, key) for key in parsed if key.digest is not None)
            found = iter(parsed)
            new_keys = [next(found) if k.__class__ is bytes else k for k in new_keys]
        self.keys += [key if key.identity is None else key.identity for key in new_keys]
        self.bounds += [key.bound for key in new_keys]  # None but for those identities
        self.positions += new_positions
        self.used = used
        if self.stride == 1:
            indices = self.positions
        else:
            indices = []
            for position in self.positions:
                indices += (position, position + 1)
        if not indices:
            self.getter = None
        elif len(indices) == 1:
            only = indices[0]
            self.getter = lambda view: (view[only],)
        else:
            self.getter = itemgetter(*indices)
        self.raw = ()  # everything counts as changed after new keys

    def read(self) -> list[int] | None:
        """Read the value words; return the indices that changed (None: all of them)."""
        if self.getter is None:
            self.raw = ()
            return []
        raw = self.getter(self.words)
        old, self.raw = self.raw, raw
        if len(old) != len(raw):
            return None
        if raw == old:
            return []
        changed = []
        for start in range(0, len(raw), _BLOCK):
            end = start + _BLOCK
            if raw[start:end] != old[start:end]:
                changed += [i for i in range(start, min(end, len(raw))) if raw[i] != old[i]]
        return changed


class _Shrunk(Exception):
    """A known file got smaller or its ``used`` went back: read it again from scratch."""


# -- the merged layout -----------------------------------------------------------------

# Formats whose encoded lines are kept: the library's default escaping and allow-utf-8
# (Prometheus 3), in either format; other escapings are encoded whole on each scrape.
_CACHED = {(False, UNDERSCORES), (True, UNDERSCORES), (False, ALLOWUTF8), (True, ALLOWUTF8)}
_LINES_PER_BLOCK = 64


class _Series:
    """One output sample while a layout is built: name and labels (a bucket: its labels
    but ``le``, and the ``le`` pair), and its place in its family once they are ordered.
    The family keeps these in its own lists: no object per series outlives the build."""

    __slots__ = ("name", "labels", "le", "metric", "at")

    def __init__(
        self, name: str, labels: _Labels, metric: _Metric, le: tuple[str, str] | None = None
    ) -> None:
        self.name, self.labels, self.metric, self.le = name, labels, metric, le
        self.at = -1  # not placed: a sample the merge replaced (a _count read from a file)


def _pairs(refs: Sequence[Any]) -> zip[tuple[Any, Any]]:
    """(view, position) pairs of a flat reference list.

    References are kept flat, ``[view, position, view, position, ...]``: a tuple per
    file value would be one more object per entry, tens of thousands in a large folder.
    """
    it = iter(refs)
    return zip(it, it, strict=True)


class _Sum:
    """A series that sums file values; ``bind()`` tells it where its value goes once the
    family's samples are ordered."""

    __slots__ = ("series", "metric", "at", "refs")

    def __init__(self, series: _Series) -> None:
        self.series: _Series | None = series  # until bind()
        self.metric, self.at = _NOWHERE, 0
        # [view, position, view, position, ...]; a tuple once built (no spare room).
        self.refs: Any = []

    def bind(self) -> None:
        series, self.series = self.series, None
        if series is not None and series.at >= 0:
            self.metric, self.at = series.metric, series.at
        self.refs = tuple(self.refs)

    def compute(self) -> None:
        value = 0.0
        for view, i in _pairs(self.refs):
            value += view[i]
        self.metric.set(self.at, value)


class _Extreme(_Sum):
    """Gauges in ``min`` and ``max`` modes: the first value, replaced by any that is
    ``better`` (``<`` or ``>``), as the library compares them (NaN never replaces)."""

    __slots__ = ("better",)

    def __init__(self, series: _Series, better: Callable[[float, float], bool]) -> None:
        super().__init__(series)
        self.better = better

    def compute(self) -> None:
        refs, better = self.refs, self.better
        current = refs[0][refs[1]]
        for view, i in _pairs(refs):
            value = view[i]  # read once: a writer may change it in between
            if better(value, current):
                current = value
        self.metric.set(self.at, current)


class _Last(_Sum):
    """Gauges in ``all`` modes: a series per pid; the last one written wins."""

    __slots__ = ()

    def compute(self) -> None:
        refs = self.refs
        self.metric.set(self.at, refs[-2][refs[-1]])


class _Buckets:
    """One histogram label set: buckets summed per bound, then made cumulative.

    The references of all its buckets are one flat list; ``ends[n]`` is where bucket
    ``n``'s end (one list per bucket would be thousands more objects). Its buckets are
    consecutive samples of the family, from ``first``; its _count is at ``count_at``."""

    __slots__ = ("series", "refs", "ends", "metric", "first", "count_at")

    def __init__(
        self, series: list[_Series], refs: list[Any], ends: list[int], count: _Series
    ) -> None:
        self.series: tuple[_Series, ...] = (*series, count)  # until bind()
        self.refs: tuple[Any, ...] = tuple(refs)
        self.ends: tuple[int, ...] = tuple(ends)
        self.metric, self.first, self.count_at = _NOWHERE, 0, 0

    def bind(self) -> None:
        first, count = self.series[0], self.series[-1]
        self.metric, self.first, self.count_at = first.metric, first.at, count.at
        self.series = ()

    def compute(self) -> None:
        refs, metric, at = self.refs, self.metric, self.first
        acc = 0.0
        j = 0
        for end in self.ends:
            value = 0.0
            while j < end:
                value += refs[j][refs[j + 1]]
                j += 2
            acc += value
            metric.set(at, acc)
            at += 1
        metric.set(self.count_at, acc)


class _MostRecent:
    """A gauge in a ``mostrecent`` mode: which series exist, and their order, depend on
    the timestamps, so the whole family is merged again when any of its values change."""

    __slots__ = ("metric", "raw")

    def __init__(self, metric: _Metric, raw: list[tuple[str, _Labels, Any, int]]) -> None:
        self.metric, self.raw = metric, raw  # raw: (name, labels, view, position)

    def bind(self) -> None:
        pass

    def compute(self) -> None:
        groups: dict[_Labels, dict[tuple[str, _Labels], float]] = {}
        stamps: dict[_Labels, dict[str, float]] = {}
        for name, labels, view, i in self.raw:
            by_name = stamps.setdefault(labels, {})
            timestamp = float(view[i + 1] or 0)
            if by_name.get(name, 0.0) < timestamp:
                groups.setdefault(labels, {})[(name, labels)] = view[i]
                by_name[name] = timestamp
        metric = self.metric
        keys = [key for group in groups.values() for key in group]
        names, labelsets = [name for name, _ in keys], [labels for _, labels in keys]
        if names != metric.names or labelsets != metric.labels:
            # Before the values: it numbers the samples.
            metric.set_series([_Series(name, labels, metric) for name, labels in keys])
        values = [value for group in groups.values() for value in group.values()]
        for at, value in enumerate(values):
            metric.set(at, value)


class _Metric:
    """One merged family: its samples' names, labels and values in parallel lists (one
    object per series would be most of the index of a large folder), and their lines
    encoded per format.

    The lines are kept encoded, in blocks of ``_LINES_PER_BLOCK`` series per format,
    and nothing else of them: when a value changes, its block is written again from
    its old bytes (each line's prefix is the line up to its last space: values hold no
    space, escaped label values hold no newline) and the current values."""

    __slots__ = ("name", "documentation", "typ", "mode", "names", "labels", "les", "values",
                 "blocks", "dirty", "om_only")  # fmt: skip

    def __init__(self, name: str, documentation: str, typ: str) -> None:
        self.name, self.documentation, self.typ = name, documentation, typ
        self.mode = ""
        self.names: list[str] = []
        self.labels: list[_Labels] = []  # a bucket's: all but ``le``
        self.les: list[tuple[str, str] | None] = []  # a bucket's ``le`` pair
        self.values = array("d")
        self.blocks: dict[Format, list[bytes]] = {}
        self.dirty: dict[Format, set[int]] = {}  # per format: blocks to write again
        self.om_only = False

    def set_series(self, series: list[_Series]) -> None:
        for n, one in enumerate(series):
            one.at = n
        self.names = [one.name for one in series]
        self.labels = [one.labels for one in series]
        self.les = [one.le for one in series]
        # Zeros, not a mark of "no value yet": every sample is set before it is rendered.
        self.values = array("d", bytes(8 * len(series)))
        self.blocks, self.dirty = {}, {}
        # The text format moves these samples to a family of their own.
        names = {self.name + suffix for suffix in ("_created", "_gsum", "_gcount")}
        self.om_only = any(name in names for name in self.names)

    def set(self, at: int, value: float) -> None:
        values = self.values
        old = values[at]
        if (value == old and math.copysign(1.0, value) == math.copysign(1.0, old)) or (
            value != value and old != old
        ):
            return
        values[at] = value
        if self.dirty:  # nothing rendered yet: nothing to redo
            self.touch(at // _LINES_PER_BLOCK)

    def touch(self, block: int) -> None:
        """A value of this block changed: write the block again when next encoded."""
        for dirty in self.dirty.values():
            dirty.add(block)

    def chunks(self, fmt: Format) -> list[bytes]:
        """The family encoded: its HELP and TYPE lines, then its blocks of lines."""
        if (fmt.openmetrics, fmt.escaping) not in _CACHED or (self.om_only and not fmt.openmetrics):
            return [encoder.encode_metric(fmt, self.as_metric()).encode("utf-8")]
        blocks = self.blocks.get(fmt)
        if blocks is None:
            blocks, dirty = self._render(fmt), set()
            # Most families' lines are the same bytes in both formats (the headers are
            # not in the blocks): those share one copy, and one set of blocks to redo.
            for other in list(self.blocks):
                if self._current(other) == blocks:
                    blocks, dirty = self.blocks[other], self.dirty[other]
                    break
            self.blocks[fmt], self.dirty[fmt] = blocks, dirty
        else:
            blocks = self._current(fmt)
        head = encoder.header(fmt, self.name, self.typ, self.documentation).encode("utf-8")
        return [head, *blocks]

    def _current(self, fmt: Format) -> list[bytes]:
        """The blocks of ``fmt``, those whose values changed written again."""
        blocks, dirty = self.blocks[fmt], self.dirty[fmt]
        for n in dirty:
            blocks[n] = self._rewrite(blocks[n], n)
        dirty.clear()
        return blocks

    def _render(self, fmt: Format) -> list[bytes]:
        bases: dict[_Labels, tuple[str, str]] = {}
        pairs: dict[tuple[str, str], str] = {}
        value = encoder.format_value
        lines = []
        for name, labels, le, one in self._samples():
            if le is None:
                line = encoder.prefix(fmt, name, labels, pairs)
            else:
                line = encoder.bucket_prefix(fmt, name, labels, le[1], bases, pairs)
            lines.append(f"{line}{value(one)}\n")
        size = _LINES_PER_BLOCK
        return ["".join(lines[n : n + size]).encode("utf-8") for n in range(0, len(lines), size)]

    def _rewrite(self, block: bytes, n: int) -> bytes:
        value = encoder.format_value
        part = self.values[n * _LINES_PER_BLOCK : (n + 1) * _LINES_PER_BLOCK]
        lines = block.split(b"\n")[:-1]
        return b"".join(
            [
                b"%s%s\n" % (line[: line.rfind(b" ") + 1], value(one).encode())
                for line, one in zip(lines, part, strict=True)
            ]
        )

    def _samples(self) -> Iterator[tuple[str, _Labels, tuple[str, str] | None, float]]:
        return zip(self.names, self.labels, self.les, self.values, strict=True)

    def as_metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, self.typ)
        metric.samples = [
            Sample(name, dict(labels if le is None else labels + (le,)), value)
            for name, labels, le, value in self._samples()
        ]
        return metric


# Where a unit whose sample the merge replaced writes: nothing reads it.
_NOWHERE = _Metric("", "", "untyped")
_NOWHERE.values = array("d", [0.0])

_le_pairs: dict[str, tuple[str, str]] = {}


def _le_pair(bound: str) -> tuple[str, str]:
    found = _le_pairs.get(bound)
    if found is None:
        if len(_le_pairs) > 10_000:
            _le_pairs.clear()
        found = _le_pairs[bound] = ("le", bound)
    return found


def _labels(entry: Key | Identity, bound: Bound | None) -> _Labels:
    """An entry's labels, sorted by name (a bucket read through its identity: rebuilt)."""
    if isinstance(entry, Key):
        return entry.labels
    return entry.with_le(bound[0])  # type: ignore[index]  # an identity has its bound


class _BrokenIn(Exception):
    """A file whose keys the merge cannot use (a bucket bound that is not a number)."""

    def __init__(self, file: _File, reason: str) -> None:
        super().__init__(reason)
        self.file = file


class _Merge:
    """One family while the layout is built: ``_accumulate_metrics``'s dictionaries, with
    units (what computes a value from which file values) where the library has values."""

    __slots__ = ("metric", "samples", "buckets", "slots", "deferred")

    def __init__(self, metric: _Metric) -> None:
        self.metric = metric
        # Per label set, per (name, labels): its unit, or the _Series that finish() puts
        # in place of a _count sample.
        self.samples: dict[_Labels, dict[tuple[str, _Labels], Any]] = {}
        self.buckets: dict[_Labels, dict[float, list[Any]]] = {}
        self.slots: dict[_Labels, list[Any]] = {}  # (file units, index) of each bucket value
        # Gauges wait for every file: the mode of the last one decides how all merge.
        self.deferred: list[tuple[str, _Labels, _File, int]] | None = (
            [] if metric.typ == "gauge" else None
        )

    def add(
        self,
        entry: Key | Identity,
        bound: Bound | None,
        labels: _Labels | None,
        file: _File,
        slot: int,
    ) -> None:
        """One file value of a counter, histogram or summary, in the library's order.

        ``labels`` are given for a gauge file's key (with its pid), else they are the
        entry's, looked up only when needed (a bucket's are not)."""
        units, i, position = file.units, slot * file.stride, file.positions[slot]
        view = file.doubles
        without_le = entry.without_le
        if without_le is not None and self.metric.typ == "histogram":
            # (An identity comes with its bound; a Key has its own.)
            le = entry.le if bound is None else bound[1]  # type: ignore[union-attr]
            if le is None:
                raise _BrokenIn(file, "a bucket bound is not a number")
            if labels is not None:
                without_le = tuple([label for label in labels if label[0] != "le"])
            by_bound = self.buckets.get(without_le)
            if by_bound is None:
                by_bound = self.buckets[without_le] = {}
                self.slots[without_le] = []
            refs = by_bound.get(le)
            if refs is None:
                refs = by_bound[le] = []
            refs.append(view)
            refs.append(position)
            slots = self.slots[without_le]
            slots.append(units)
            slots.append(i)
            return
        gauge_file = labels is not None
        if labels is None:
            labels = _labels(entry, bound)
        group = self.samples.get(labels)
        if group is None:
            group = self.samples[labels] = {}
        series_key = (entry.name, labels)
        unit = group.get(series_key)
        if unit is None:
            unit = group[series_key] = _Sum(_Series(entry.name, labels, self.metric))
        unit.refs += (view, position)
        units[i] = unit
        if gauge_file:
            units[i + 1] = unit

    def finish(self, all_units: list[_Unit]) -> None:
        if self.deferred is not None:
            self._gauge(all_units)
            if self.metric.mode in ("mostrecent", "livemostrecent"):
                return
        metric = self.metric
        bucket_name, count_name = metric.name + "_bucket", metric.name + "_count"
        after: dict[_Labels, list[_Series]] = {}  # per label set: its buckets, then _count
        for labels, by_bound in self.buckets.items():
            group = self.samples.setdefault(labels, {})
            series, refs, ends = [], [], []
            for bound, bound_refs in sorted(by_bound.items()):
                one = _Series(bucket_name, labels, metric, _le_pair(floatToGoString(bound)))
                series.append(one)
                refs += bound_refs
                ends.append(len(refs))
            count_key = (count_name, labels)
            count = _Series(count_name, labels, metric)
            after[labels] = list(series)
            if count_key in group:
                # Replaces, in place, a _count sample read from a file, as the library
                # does; the unit it had still runs when its values change, unplaced.
                all_units.append(group[count_key])
                group[count_key] = count
            else:
                after[labels].append(count)
            unit = _Buckets(series, refs, ends, count)
            for units, i in _pairs(self.slots[labels]):
                units[i] = unit
            all_units.append(unit)
        series = []
        for labels, group in self.samples.items():
            for one in group.values():
                if one.__class__ is _Series:
                    series.append(one)
                else:
                    series.append(one.series)
                    all_units.append(one)
            # The bucket keys are new in the group: they follow what it held.
            series += after.get(labels, ())
        metric.set_series(series)

    def _gauge(self, all_units: list[_Unit]) -> None:
        metric, mode = self.metric, self.metric.mode
        if mode in ("mostrecent", "livemostrecent"):
            entries: list[tuple[str, _Labels, Any, int]] = []
            unit: Any = _MostRecent(metric, entries)
            # (finish() calls this for a gauge only, whose deferred is a list.)
            for name, labels, file, slot in self.deferred:  # type: ignore[union-attr]
                labels = tuple([label for label in labels if label[0] != "pid"])
                entries.append((name, labels, file.doubles, file.positions[slot]))
                file.units[2 * slot] = file.units[2 * slot + 1] = unit
            all_units.append(unit)
            return
        unit_class: Callable[[_Series], _Sum] = _Last
        if mode in ("min", "livemin"):
            unit_class = partial(_Extreme, better=lt)
        elif mode in ("max", "livemax"):
            unit_class = partial(_Extreme, better=gt)
        elif mode in ("sum", "livesum"):
            unit_class = _Sum
        strip_pid = mode in _PID_LESS_MODES
        for name, labels, file, slot in self.deferred:  # type: ignore[union-attr]
            if strip_pid:
                labels = tuple([label for label in labels if label[0] != "pid"])
            group = self.samples.setdefault(labels, {})
            series_key = (name, labels)
            unit = group.get(series_key)
            if unit is None:
                unit = group[series_key] = unit_class(_Series(name, labels, metric))
            unit.refs += (file.doubles, file.positions[slot])
            i = slot * file.stride
            file.units[i] = unit
            if file.stride == 2:
                file.units[i + 1] = unit


class _Layout:
    """Builds the merged families in ``MultiProcessCollector.merge``'s order, mirroring
    ``_read_metrics`` then ``_accumulate_metrics`` in one pass over the files' entries.
    Values are referenced as (the file's mapping, position), so units read current
    values without a lookup."""

    def __init__(self) -> None:
        self.units: list[_Unit] = []

    def build(self, files: list[_File]) -> list[_Metric]:
        merges: dict[str, _Merge] = {}
        for file in files:
            gauge_file = file.kind.typ == "gauge"
            pid_label = ("pid", file.kind.pid)
            bounds = file.bounds
            for slot, entry in enumerate(file.keys):
                merge = merges.get(entry.metric_name)
                if merge is None:
                    metric = _Metric(entry.metric_name, entry.help, file.kind.typ)
                    merge = merges[entry.metric_name] = _Merge(metric)
                labels = None
                if gauge_file:
                    merge.metric.mode = file.kind.mode
                    labels = _labels(entry, bounds[slot]) + (pid_label,)
                if merge.deferred is not None:
                    labels = labels or _labels(entry, bounds[slot])
                    merge.deferred.append((entry.name, labels, file, slot))
                else:
                    merge.add(entry, bounds[slot], labels, file, slot)
        for merge in merges.values():
            merge.finish(self.units)
        # The families' samples are numbered: units learn where their values go.
        for unit in self.units:
            unit.bind()
        return [merge.metric for merge in merges.values()]


# -- the reader ------------------------------------------------------------------------


@dataclass
class Snapshot:
    """What one scrape read: the merged families, files merged and files skipped."""

    metrics: list[_Metric]
    files: int
    skipped: int


class FolderReader:
    """The index of one folder, kept by a serving process between scrapes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.files: dict[str, _File] = {}
        # Keys already read, shared by files: other keys by their text, buckets by their
        # series' identity. Pruned when a file goes, so they follow what the folder holds.
        self.keys: dict[bytes, Key] = {}
        self.identities: dict[bytes, Identity | None] = {}
        self.dropped = False
        self.bad: dict[str, tuple[int, int, int]] = {}
        self.metrics: list[_Metric] = []
        self.units: list[_Unit] = []
        self.layout_key: tuple[tuple[int, int], ...] = ()
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            for file in self.files.values():
                file.close()
            self.files.clear()
            self.keys.clear()
            self.identities.clear()
            self.metrics, self.units, self.layout_key = [], [], ()

    def read(self, *, timeout: float | None = None) -> Snapshot:
        """Bring the index up to date under the folder's shared lock and merge."""
        with self.lock, _gc_paused():
            return self._read(timeout)

    def _read(self, timeout: float | None) -> Snapshot:
        if timeout is None:
            timeout = multiprocess.READ_LOCK_TIMEOUT
        with multiprocess.folder_lock(self.path, shared=True, timeout=timeout):
            order, skipped = self._scan()
            try:
                return self._merge(order, skipped)
            except BaseException:
                # Values read but not merged would count as unchanged next time and
                # stay stale: the next scrape rebuilds from the files instead.
                self.layout_key = ()
                for file in order:
                    file.raw = ()
                raise

    def chunks(
        self,
        fmt: Format,
        allows: Callable[[str], bool] | None = None,
        wanted: frozenset[str] = frozenset(),
        *,
        timeout: float | None = None,
    ) -> tuple[list[bytes], set[str], Snapshot]:
        """The encoded families the caller may see (narrowed to ``wanted`` sample names,
        as a restricted registry narrows), the names of all merged families, and the
        snapshot. Encoding happens under the reader's lock: a concurrent scrape in
        another thread never sees a family half updated."""
        with self.lock, _gc_paused():
            snapshot = self._read(timeout)
            parts, seen = [], set()
            for metric in snapshot.metrics:
                name = metric.name
                seen.add(name)
                if allows is not None and not allows(name):
                    continue
                if wanted:
                    if any(w.startswith(name) for w in wanted):
                        narrowed = metric.as_metric()._restricted_metric(wanted)
                        if narrowed is not None:
                            parts.append(encoder.encode_metrics(fmt, [narrowed]))
                    continue
                parts += metric.chunks(fmt)
            return parts, seen, snapshot

    def _drop(self, name: str) -> None:
        file = self.files.pop(name, None)
        if file is not None:
            file.close()
            self.dropped = True

    def _mark_bad(self, name: str, path: str) -> None:
        self._drop(name)
        with contextlib.suppress(OSError):
            self.bad[name] = multiprocess.signature(os.stat(path))

    def _scan(self) -> tuple[list[_File], int]:
        order: list[_File] = []
        skipped = 0
        seen = set()
        for entry in os.scandir(self.path):
            name = entry.name
            if not name.endswith(".db"):
                continue  # the lock files, the archive step's working files
            kind = _file_name(name)
            if kind is None:
                skipped += 1  # foreign: prometheus_client would fail on its name
                continue
            seen.add(name)
            file = self.files.get(name)
            try:
                inode = entry.inode()
                if file is not None and file.inode != inode:
                    self._drop(name)  # replaced under the same name
                    file = None
                if file is None:
                    file = self._open(entry, kind)
                    if file is None:
                        skipped += 1
                        continue
                try:
                    file.refresh(self.keys, self.identities)
                except _Shrunk:
                    self._drop(name)
                    file = self._open(entry, kind)
                    if file is None:
                        skipped += 1
                        continue
                    file.refresh(self.keys, self.identities)
            except FileNotFoundError:
                self._drop(name)  # deleted since the listing (a dead process's live gauge)
                continue
            except (BrokenKey, _Shrunk, OSError, ValueError):
                self._mark_bad(name, entry.path)
                skipped += 1
                continue
            order.append(file)
        for gone in self.files.keys() - seen:
            self._drop(gone)
        for gone in self.bad.keys() - seen:
            del self.bad[gone]
        return order, skipped

    def _open(self, entry: os.DirEntry[str], kind: _FileName) -> _File | None:
        """A new file, or None when it is to be skipped (too small, known broken)."""
        stat = entry.stat()
        if stat.st_size < 8:
            return None  # no header: empty or truncated
        if self.bad.get(entry.name) == multiprocess.signature(stat):
            return None  # found broken before and unchanged since
        self.bad.pop(entry.name, None)
        file = _File(entry.path, entry.name, kind, stat.st_ino)
        self.files[entry.name] = file
        return file

    def _merge(self, order: list[_File], skipped: int) -> Snapshot:
        layout_key = tuple((id(f), len(f.keys)) for f in order)
        changed: list[_Unit] = []
        rebuild = layout_key != self.layout_key
        for file in order:
            indices = file.read()
            if indices is None:
                rebuild = True
            elif indices and not rebuild:
                units = file.units
                changed += [units[i] for i in indices]
        if rebuild:
            while True:
                try:
                    self._rebuild(order)
                    break
                except _BrokenIn as broken:
                    order.remove(broken.file)
                    self._mark_bad(broken.file.name, broken.file.path)
                    skipped += 1
            self.layout_key = tuple((id(f), len(f.keys)) for f in order)
            for unit in self.units:
                unit.compute()
        else:
            done = set()
            for unit in changed:
                if id(unit) not in done:
                    done.add(id(unit))
                    unit.compute()
        return Snapshot(self.metrics, len(order), skipped)

    def _rebuild(self, order: list[_File]) -> None:
        for file in order:
            file.units = [None] * (len(file.keys) * file.stride)
        layout = _Layout()
        self.metrics = layout.build(order)
        self.units = layout.units
        if self.dropped:
            # Keys no file holds any more are forgotten with the files.
            self.dropped = False
            entries = [entry for file in order for entry in file.keys]
            self.keys = {
                entry.digest: entry
                for entry in entries
                if isinstance(entry, Key) and entry.digest is not None
            }
            self.identities = {
                entry.digest: entry for entry in entries if isinstance(entry, Identity)
            }


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection while the index is updated.

    Building the index allocates tens of thousands of objects that live on; each
    collection they trigger walks all of them again, which more than doubled the time
    of a first scrape. The index holds no reference cycles that need collecting.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_readers: dict[str, FolderReader] = {}
_readers_lock = threading.Lock()


def reader(path: str) -> FolderReader:
    """This process's reader of ``path``, created on first use."""
    found = _readers.get(path)
    if found is None:
        with _readers_lock:
            found = _readers.setdefault(path, FolderReader(path))
    return found


def clear_caches() -> None:
    """Forget what is kept across readers (benchmarks of a first scrape)."""
    mmap_keys.clear()


def reset() -> None:
    """Forget every index (tests, and a process that changed folders)."""
    with _readers_lock:
        for one in _readers.values():
            one.close()
        _readers.clear()


@dataclass
class FolderRead:
    """The folder merged into prometheus_client Metrics (push, tests, other tools)."""

    metrics: list[Metric]
    files: int  # files merged
    skipped: int  # files left out: empty, foreign, unreadable or corrupt


def read_folder(path: str, *, timeout: float | None = None) -> FolderRead:
    """Merge the folder once, as ``MultiProcessCollector`` would, skipping broken files."""
    one = FolderReader(path)
    try:
        snapshot = one.read(timeout=timeout)
        return FolderRead(
            [m.as_metric() for m in snapshot.metrics], snapshot.files, snapshot.skipped
        )
    finally:
        one.close()

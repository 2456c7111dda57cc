"""Prometheus text (0.0.4) and OpenMetrics 1.0, byte for byte as prometheus_client writes
them, with what does not change between scrapes rendered once.

prometheus_client's ``generate_latest`` escapes and formats every label of every line
on every scrape; here a family's HELP and TYPE lines and a series' line prefix
(``name{labels} ``) are rendered once per format and kept, so a scrape formats only
values. The rules (name munging, escaping schemes, the text format's separate
``_created``/``_gsum``/``_gcount`` families, exemplars, native histograms left out of
OpenMetrics 1.0) are the library's; the property tests compare the bytes.
"""

from __future__ import annotations

import gzip as gzip_module
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from prometheus_client import exposition as text_exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om_exposition

# The library's own escaping rules. They are private names: prometheus-client is pinned
# below its next minor release in pyproject.toml, and tests/test_encoder.py compares
# bytes with its encoders, so a change of rules fails a test instead of the output.
from prometheus_client.openmetrics.exposition import (
    ALLOWUTF8,
    UNDERSCORES,
    _escape,
    _is_legacy_labelname_rune,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import parse_version
from prometheus_client.validation import _is_valid_legacy_metric_name

if TYPE_CHECKING:

    def floatToGoString(d: float) -> str: ...  # noqa: N802 - unannotated in the library

else:
    from prometheus_client.utils import floatToGoString

_INF = math.inf
_OM_ONLY_SUFFIXES = ("_created", "_gsum", "_gcount")
# Series prefixes are kept per (format, name, labels); past this many the cache starts
# again rather than grow with label values that come and go.
_PREFIX_CACHE_LIMIT = 200_000


@dataclass(frozen=True)
class Format:
    """One exposition format: what a scrape's ``Accept`` header chose."""

    openmetrics: bool
    escaping: str = UNDERSCORES
    version: str = ""  # OpenMetrics only: which version was asked for


TEXT = Format(False)
OPENMETRICS = Format(True, version="1.0.0")


@lru_cache(maxsize=256)
def negotiate(accept: str) -> tuple[Format, str]:
    """The format and content type for this ``Accept`` header.

    prometheus_client's ``choose_encoder`` ignores q-values; here the media ranges are
    taken in order of q (``q=0`` refused), and within one q the library's own choice
    stands, so a header without q-values gets exactly the library's answer. Nothing
    acceptable gets the library's default, text 0.0.4, rather than a 406: a scraper
    that asked oddly still gets its metrics.
    """
    groups: dict[float, list[str]] = {}
    for entry in accept.split(","):
        media, quality, kept = _weighed(entry)
        if quality > 0 and media.strip():
            groups.setdefault(quality, []).append(";".join([media, *kept]))
    for _, entries in sorted(groups.items(), key=lambda item: -item[0]):
        try:
            chosen, content_type = text_exposition.choose_encoder(",".join(entries))
        except (TypeError, ValueError):
            # The library fails on a version it cannot compare ("version=x"): such a
            # range asks for nothing we can serve.
            continue
        if chosen is not text_exposition.generate_latest:
            return _format(chosen), content_type
        if any(e.split(";")[0].strip().lower() in _TEXT_RANGES for e in entries):
            return TEXT, text_exposition.CONTENT_TYPE_PLAIN_0_0_4
    return TEXT, text_exposition.CONTENT_TYPE_PLAIN_0_0_4


def _weighed(entry: str) -> tuple[str, float, list[str]]:
    """(value, q, other parameters) of one entry of an Accept or Accept-Encoding header."""
    value, _, params = entry.partition(";")
    kept, quality = [], 1.0
    for param in params.split(";") if params else ():
        name, _, number = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(number)
            except ValueError:
                quality = 0.0  # a q-value that is not a number accepts nothing
        else:
            kept.append(param)
    return value, quality, kept


# Media ranges that text 0.0.4 satisfies.
_TEXT_RANGES = {"text/plain", "text/*", "*/*"}


def _format(chosen: Callable[..., bytes]) -> Format:
    func = getattr(chosen, "func", chosen)
    options = getattr(chosen, "keywords", {})
    openmetrics = func is om_exposition.generate_latest
    return Format(
        openmetrics=openmetrics,
        escaping=options.get("escaping", UNDERSCORES),
        version=options.get("version", "1.0.0") if openmetrics else "",
    )


@lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` accepts gzip, q-values honoured (``gzip;q=0`` refuses
    it; ``*`` stands for every coding not named)."""
    named: dict[str, float] = {}
    for entry in accept_encoding.split(","):
        coding, quality, _ = _weighed(entry)
        coding = coding.strip().lower()
        if coding:
            named[coding] = quality
    for coding in ("gzip", "x-gzip", "*"):
        if coding in named:
            return named[coding] > 0
    return False


def format_value(value: float) -> str:
    """``floatToGoString`` with a fast path for the common finite values."""
    if value.__class__ is float and -_INF < value < _INF:
        s = repr(value)
        dot = s.find(".")
        if value > 0 and dot > 6:
            mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
        return s
    return floatToGoString(value)


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def header(fmt: Format, name: str, typ: str, documentation: str, unit: str = "") -> str:
    """The HELP, TYPE (and OpenMetrics UNIT) lines of one family."""
    return _header(fmt, name, typ, documentation, unit)


@lru_cache(maxsize=4096)
def _header(fmt: Format, name: str, typ: str, documentation: str, unit: str) -> str:
    escaping = fmt.escaping
    if fmt.openmetrics:
        escaped = escape_metric_name(name, escaping)
        help_text = _escape(documentation, ALLOWUTF8, _is_legacy_labelname_rune)
        lines = f"# HELP {escaped} {help_text}\n# TYPE {escaped} {typ}\n"
        if unit:
            lines += f"# UNIT {escaped} {unit}\n"
        return lines
    mname, mtype = name, typ
    # Munging from OpenMetrics into Prometheus format, as generate_latest does.
    if typ == "counter":
        mname = name + "_total"
    elif typ == "info":
        mname, mtype = name + "_info", "gauge"
    elif typ == "stateset":
        mtype = "gauge"
    elif typ == "gaugehistogram":
        mtype = "histogram"
    elif typ == "unknown":
        mtype = "untyped"
    escaped = escape_metric_name(mname, escaping)
    help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {escaped} {help_text}\n# TYPE {escaped} {mtype}\n"


def prefix(
    fmt: Format,
    name: str,
    labels: tuple[tuple[str, str], ...],
    pairs: dict[tuple[str, str], str] | None = None,
) -> str:
    """``name{labels} `` of one series, labels sorted by name as the library sorts them.

    ``pairs`` keeps rendered ``name="value"`` pairs between calls of one format: the
    same few recur across many series."""
    escaping = fmt.escaping
    if pairs is None:
        pairs = {}
    return _wrap(fmt, name, ",".join([_pair(escaping, p, pairs) for p in sorted(labels)]))


def bucket_prefix(
    fmt: Format,
    name: str,
    base: tuple[tuple[str, str], ...],
    le: str,
    bases: dict[tuple[tuple[str, str], ...], tuple[str, str]],
    pairs: dict[tuple[str, str], str],
) -> str:
    """``prefix(fmt, name, base + (("le", le),))``, rendering ``base`` once per ``bases``:
    the buckets of one histogram series share every label but ``le``."""
    escaping = fmt.escaping
    parts = bases.get(base)
    if parts is None:
        names = sorted(base)
        before = [pair for pair in names if pair[0] < "le"]
        after = names[len(before) :]
        parts = bases[base] = (
            "".join([_pair(escaping, pair, pairs) + "," for pair in before]),
            "".join(["," + _pair(escaping, pair, pairs) for pair in after]),
        )
    return _wrap(fmt, name, f"{parts[0]}{_pair(escaping, ('le', le), pairs)}{parts[1]}")


def _wrap(fmt: Format, name: str, labelstr: str) -> str:
    escaping = fmt.escaping
    legacy = escaping != ALLOWUTF8 or _legacy_name(name)
    if fmt.openmetrics:
        if not legacy:
            labelstr = escape_metric_name(name, escaping) + ("," if labelstr else "") + labelstr
        if labelstr:
            labelstr = "{" + labelstr + "}"
        if legacy:
            return f"{_sample_name(name, escaping)}{labelstr} "
        return f"{labelstr} "
    if legacy:
        if labelstr:
            labelstr = "{" + labelstr + "}"
        return f"{_metric_name(name, escaping)}{labelstr} "
    comma = "," if labelstr else ""
    return f"{{{_metric_name(name, escaping)}{comma}{labelstr}}} "


# Rendered names, per escaping: the same few recur across many series. Bounded by
# clearing, like the prefix cache, so passing names cannot grow it without end.
_names: dict[tuple[str, str, str], str] = {}


def _pair(escaping: str, pair: tuple[str, str], pairs: dict[tuple[str, str], str]) -> str:
    found = pairs.get(pair)
    if found is None:
        name, value = pair
        found = pairs[pair] = f'{escape_label_name(name, escaping)}="{_label_value(value)}"'
    return found


def _cached_name(kind: str, name: str, escaping: str) -> str:
    key = (kind, name, escaping)
    found = _names.get(key)
    if found is None:
        if len(_names) >= _PREFIX_CACHE_LIMIT:
            _names.clear()
        if kind == "metric":
            found = escape_metric_name(name, escaping)
        elif kind == "sample":
            found = _escape(name, escaping, _is_legacy_labelname_rune)
        else:
            found = "1" if _is_valid_legacy_metric_name(name) else ""
        _names[key] = found
    return found


def _metric_name(name: str, escaping: str) -> str:
    return _cached_name("metric", name, escaping)


def _sample_name(name: str, escaping: str) -> str:
    return _cached_name("sample", name, escaping)


def _legacy_name(name: str) -> bool:
    return _cached_name("legacy", name, "") == "1"


class PrefixCache:
    """Series prefixes by (format, name, labels), thread-safe enough under the GIL:
    two threads may render the same prefix once each, never a wrong one."""

    def __init__(self, limit: int = _PREFIX_CACHE_LIMIT) -> None:
        self.limit = limit
        self._cache: dict[tuple[Format, str, tuple[tuple[str, str], ...]], str] = {}
        self._lock = threading.Lock()

    def get(self, fmt: Format, name: str, labels: tuple[tuple[str, str], ...]) -> str:
        key = (fmt, name, labels)
        found = self._cache.get(key)
        if found is None:
            found = prefix(fmt, name, labels)
            if len(self._cache) >= self.limit:
                with self._lock:
                    self._cache.clear()
            self._cache[key] = found
        return found

    def clear(self) -> None:
        self._cache.clear()


_prefixes = PrefixCache()


def _exemplar(metric: Metric, sample: Sample) -> str:
    exemplar: Exemplar
    exemplar = sample.exemplar  # type: ignore[assignment]  # called for a sample with one
    ok = (
        (metric.type == "counter" and sample.name.endswith("_total"))
        or (metric.type == "gaugehistogram" and sample.name.endswith("_bucket"))
        or (
            metric.type == "histogram"
            and (sample.name.endswith("_bucket") or sample.name == metric.name)
        )
    )
    if not ok:
        raise ValueError(
            f"Metric {metric.name} has exemplars, but is not a histogram bucket or counter"
        )
    labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(exemplar.labels.items()))
    text = f" # {{{labels}}} {floatToGoString(exemplar.value)}"
    if exemplar.timestamp is not None:
        text += f" {exemplar.timestamp}"
    return text


def _sample_line(fmt: Format, metric: Metric, sample: Sample) -> str | None:
    labels = sample.labels
    items = tuple(sorted(labels.items())) if labels else ()
    line = _prefixes.get(fmt, sample.name, items)
    timestamp = sample.timestamp
    if fmt.openmetrics:
        if sample.native_histogram:
            if _version(fmt.version) < (2, 0, 0):
                return None
            raise _Unsupported
        value = "" if sample.value is None else format_value(sample.value)
        stamp = "" if timestamp is None else f" {timestamp}"
        exemplar = _exemplar(metric, sample) if sample.exemplar else ""
        return f"{line}{value}{stamp}{exemplar}\n"
    stamp = "" if timestamp is None else f" {int(float(timestamp) * 1000):d}"
    return f"{line}{format_value(sample.value)}{stamp}\n"


@lru_cache(maxsize=16)
def _version(version: str) -> tuple[int | str, ...]:
    return parse_version(version)


class _Unsupported(Exception):
    """A sample this encoder does not render (native histograms in OpenMetrics 2)."""


def encode_metric(fmt: Format, metric: Metric) -> str:
    """One family as ``generate_latest`` (text or OpenMetrics) renders it."""
    try:
        return _encode_metric(fmt, metric)
    except _Unsupported:
        return _library_encode(fmt, [metric])


def _encode_metric(fmt: Format, metric: Metric) -> str:
    out = [_header(fmt, metric.name, metric.type, metric.documentation, metric.unit)]
    if fmt.openmetrics:
        for sample in metric.samples:
            line = _sample_line(fmt, metric, sample)
            if line is not None:
                out.append(line)
        return "".join(out)
    separate: dict[str, list[str]] = {}
    for sample in metric.samples:
        for suffix in _OM_ONLY_SUFFIXES:
            if sample.name == metric.name + suffix:
                # OpenMetrics-only sample: the text format puts it in a gauge at the end.
                # (The text format never leaves a sample out: no None here or below.)
                separate.setdefault(suffix, []).append(_sample_line(fmt, metric, sample))  # type: ignore[arg-type]
                break
        else:
            out.append(_sample_line(fmt, metric, sample))  # type: ignore[arg-type]
    for suffix, lines in sorted(separate.items()):
        out.append(_header(fmt, metric.name + suffix, "gauge", metric.documentation, ""))
        out.extend(lines)
    return "".join(out)


class _OneShot:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def _library_encode(fmt: Format, metrics: list[Metric]) -> str:
    if fmt.openmetrics:
        body: bytes = om_exposition.generate_latest(
            _OneShot(metrics), escaping=fmt.escaping, version=fmt.version
        )
        return body.decode("utf-8").removesuffix("# EOF\n")
    return text_exposition.generate_latest(_OneShot(metrics), escaping=fmt.escaping).decode("utf-8")


def encode_metrics(fmt: Format, metrics: Iterable[Metric]) -> bytes:
    """Families that are computed per scrape (a handful of lines each), encoded."""
    return "".join([encode_metric(fmt, metric) for metric in metrics]).encode("utf-8")


EOF = b"# EOF\n"

# gzip level for scrapes, chosen by measurement (benchmarks/scrape.py, RESULTS.md): on
# the demo's 1.4 MB exposition level 1 takes a fraction of the default level 9's time
# for a body a little larger, and Prometheus accepts any level.
GZIP_LEVEL = 1


def gzip(body: bytes) -> bytes:
    """``body`` gzipped for a scrape (no timestamp in the header: the same body, the same
    bytes)."""
    return gzip_module.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def clear_caches() -> None:
    """Forget rendered headers and prefixes (tests; a prefix change of the catalogue)."""
    _header.cache_clear()
    _prefixes.clear()
    _names.clear()

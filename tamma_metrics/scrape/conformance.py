"""Whether the installed prometheus_client writes and merges multiprocess files the way
our reader (``folder``) mirrors: checked once per process on a probe folder.

The reader parses prometheus_client's file format and repeats its merge step by step;
the package pins the minor release whose bytes the tests compared. Should another
version be installed all the same, a scrape must not serve silently wrong numbers: when
the probe disagrees, the scrape falls back to prometheus_client's own
``MultiProcessCollector`` (slower, always right), the error is logged, and the system
check ``tamma_metrics.E016`` fails.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from importlib.metadata import version

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from ..conf import on_reset
from . import folder
from .encoder import TEXT

__all__ = ["TESTED_RELEASE", "differences", "installed_release", "verified"]

logger = logging.getLogger(__name__)

# The prometheus_client release (major, minor) the byte-for-byte tests ran against; the
# pin in pyproject.toml says the same (a test checks that they agree).
TESTED_RELEASE = (0, 26)

# (file name, [(metric, sample name, labels, value, timestamp)]): every file type and
# gauge mode, two processes, histogram buckets, a label needing escapes.
_PROBE: dict[str, list[tuple[str, str, dict[str, str], float, float]]] = {
    "counter_101.db": [("probe_c", "probe_c_total", {"k": 'a"b\\c'}, 2.0, 0.0)],
    "counter_102.db": [("probe_c", "probe_c_total", {"k": 'a"b\\c'}, 3.5, 0.0)],
    "gauge_livesum_101.db": [("probe_g", "probe_g", {"k": "x"}, 4.0, 0.0)],
    "gauge_livesum_102.db": [("probe_g", "probe_g", {"k": "x"}, -1.0, 0.0)],
    "gauge_mostrecent_101.db": [("probe_m", "probe_m", {}, 7.0, 20.0)],
    "gauge_mostrecent_102.db": [("probe_m", "probe_m", {}, 9.0, 10.0)],
    "gauge_all_101.db": [("probe_a", "probe_a", {}, 1.0, 0.0)],
    "histogram_101.db": [
        ("probe_h", "probe_h_bucket", {"le": "0.5"}, 1.0, 0.0),
        ("probe_h", "probe_h_bucket", {"le": "+Inf"}, 2.0, 0.0),
        ("probe_h", "probe_h_sum", {}, 1.25, 0.0),
    ],
}


def installed_release() -> tuple[int, int]:
    """(major, minor) of the installed prometheus_client."""
    major, minor, *_ = version("prometheus-client").split(".")
    return int(major), int(minor)


def differences() -> str | None:
    """None when our reader and prometheus_client merge a probe folder to the same text;
    otherwise what differs (the first lines that do)."""
    with tempfile.TemporaryDirectory(prefix="tamma-probe-") as path:
        for name, entries in _PROBE.items():
            values = MmapedDict(os.path.join(path, name))
            try:
                for metric, sample, labels, value, timestamp in entries:
                    key = mmap_key(metric, sample, list(labels), list(labels.values()), "probe")
                    values.write_value(key, value, timestamp)
            finally:
                values.close()
        reader = folder.FolderReader(path)
        try:
            ours = b"".join(reader.chunks(TEXT)[0])
        finally:
            reader.close()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        theirs = generate_latest(registry)
    if ours == theirs:
        return None
    mine, library = ours.decode().splitlines(), theirs.decode().splitlines()
    first = next(
        (n for n, (a, b) in enumerate(zip(mine, library, strict=False)) if a != b),
        min(len(mine), len(library)),
    )
    return (
        f"prometheus_client {version('prometheus-client')} merges the multiprocess files "
        f"differently from the reader (tested with {TESTED_RELEASE[0]}.{TESTED_RELEASE[1]}.x): "
        f"line {first + 1}: ours {mine[first : first + 1]}, prometheus_client's "
        f"{library[first : first + 1]}"
    )


_lock = threading.Lock()
_verified: bool | None = None


def verified() -> bool:
    """Whether this process may serve the folder through the reader (probed once)."""
    global _verified
    if _verified is None:
        with _lock:
            if _verified is None:
                try:
                    problem = differences()
                except Exception as exc:  # a format the reader cannot even parse
                    problem = f"the reader failed on a probe folder: {exc!r}"
                if problem:
                    logger.error(
                        "tamma_metrics: %s; scrapes use prometheus_client's "
                        "MultiProcessCollector instead (slower).",
                        problem,
                    )
                _verified = problem is None
    return _verified


@on_reset
def _forget() -> None:
    global _verified
    _verified = None

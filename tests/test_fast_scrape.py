"""The incremental folder reader and cached encoder write prometheus_client's bytes.

Random folders (every type and gauge mode, awkward labels and values, several
processes, files written, grown past their mapping, replaced and removed between
scrapes) are read by one long-lived reader, scrape after scrape, and compared with
``MultiProcessCollector`` + ``generate_latest`` (text and OpenMetrics) on the same files.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.utils import floatToGoString

from tamma_metrics.scrape import encoder
from tamma_metrics.scrape.encoder import OPENMETRICS, TEXT
from tamma_metrics.scrape.folder import FolderReader

MODES = ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
         "mostrecent", "livemostrecent")  # fmt: skip
TYPES = ("counter", "histogram", "summary", *(f"gauge_{mode}" for mode in MODES))
BUCKETS = (0.005, 0.5, 1.0, 60.0, 1e6, math.inf)


class _Library:
    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self):
        # glob lists the folder in os.scandir's order, as the reader does.
        return MultiProcessCollector.merge(glob.glob(os.path.join(self.path, "*.db")))


def library_bytes(path: str) -> tuple[bytes, bytes]:
    source = _Library(path)
    return generate_latest(source), om_exposition.generate_latest(source)


def our_bytes(reader: FolderReader) -> tuple[bytes, bytes]:
    text = b"".join(reader.chunks(TEXT)[0])
    om = b"".join(reader.chunks(OPENMETRICS)[0]) + encoder.EOF
    return text, om


def assert_same(reader: FolderReader, path: str) -> None:
    ours, theirs = our_bytes(reader), library_bytes(path)
    assert ours[0] == theirs[0], "text format differs"
    assert ours[1] == theirs[1], "OpenMetrics differs"


label_text = st.text(
    alphabet=st.one_of(
        st.sampled_from('"\\\n{}=,# é☃'),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=8,
)
values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324, 1e21, 0.1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6).map(float),
)
help_text = st.text(alphabet=st.sampled_from('ab \\\n"é'), max_size=12)


class Family:
    def __init__(self, index: int, typ: str, labelnames: tuple[str, ...], help_: str) -> None:
        self.typ = typ
        self.name = f"fam{index}_{typ.split('_')[-1]}"
        self.labelnames = labelnames
        self.help = help_

    def keys(self, labelvalues: tuple[str, ...]) -> list[str]:
        """The mmap keys one child of this family writes, as prometheus_client does."""

        def key(sample: str, names=self.labelnames, vals=labelvalues) -> str:
            return mmap_key(self.name, sample, list(names), list(vals), self.help)

        if self.typ == "counter":
            return [key(self.name + "_total")]
        if self.typ == "summary":
            return [key(self.name + "_count"), key(self.name + "_sum")]
        if self.typ == "histogram":
            names = [*self.labelnames, "le"]
            buckets = [
                key(self.name + "_bucket", names, [*labelvalues, floatToGoString(b)])
                for b in BUCKETS
            ]
            return [*buckets, key(self.name + "_sum")]
        return [key(self.name)]

    def file_name(self, pid: str) -> str:
        return f"{self.typ}_{pid}.db"


families = st.lists(
    st.builds(
        lambda typ, labels, help_: (typ, labels, help_),
        st.sampled_from(TYPES),
        st.lists(
            st.sampled_from(["kind", "model", "z_last", "a_first"]), unique=True, max_size=3
        ).map(tuple),
        help_text,
    ),
    min_size=1,
    max_size=6,
)


class FolderMachine(RuleBasedStateMachine):
    """Scrape after scrape, one reader keeps its index while the folder changes."""

    @initialize(specs=families)
    def setup(self, specs):
        self.path = tempfile.mkdtemp(prefix="tamma-fast-")
        self.families = [Family(i, *spec) for i, spec in enumerate(specs)]
        self.reader = FolderReader(self.path)
        self.pids = ["11", "12", "13"]

    def teardown(self):
        self.reader.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def _write(self, family: Family, pid: str, labelvalues, value, timestamp):
        target = MmapedDict(os.path.join(self.path, family.file_name(pid)))
        try:
            for i, key in enumerate(family.keys(labelvalues)):
                target.write_value(key, value if i % 2 == 0 else abs(value), timestamp)
        finally:
            target.close()

    @rule(
        data=st.data(),
        pid=st.sampled_from(["11", "12", "13"]),
        value=values,
        timestamp=st.one_of(st.just(0.0), st.floats(0, 2e9)),
    )
    def write(self, data, pid, value, timestamp):
        family = data.draw(st.sampled_from(self.families))
        labelvalues = tuple(data.draw(label_text) for _ in family.labelnames)
        self._write(family, pid, labelvalues, value, timestamp)

    @rule(data=st.data(), pid=st.sampled_from(["11", "12", "13"]))
    def grow_past_the_mapping(self, data, pid):
        # More than 64 KiB of keys: the writer remaps, the reader must follow.
        family = data.draw(st.sampled_from(self.families))
        target = MmapedDict(os.path.join(self.path, family.file_name(pid)))
        children = 700 // len(family.keys(("",) * len(family.labelnames))) + 1
        try:
            for n in range(children):
                for key in family.keys(tuple(f"v{n}-{i}" for i in family.labelnames)):
                    target.write_value(key, float(n), 1.0)
        finally:
            target.close()

    @precondition(lambda self: any(Path(self.path).glob("*.db")))
    @rule(data=st.data())
    def remove_a_file(self, data):
        files = sorted(Path(self.path).glob("*.db"))
        data.draw(st.sampled_from(files)).unlink()

    @precondition(lambda self: any(Path(self.path).glob("*.db")))
    @rule(data=st.data(), value=values)
    def replace_a_file(self, data, value):
        """A new inode under the same name (pid reuse, the archive's rename)."""
        victim = data.draw(st.sampled_from(sorted(Path(self.path).glob("*.db"))))
        values_before = list(MmapedDict.read_all_values_from_file(str(victim)))
        tmp = str(victim) + ".tmp"
        target = MmapedDict(tmp)
        try:
            for key, _, timestamp, _ in reversed(values_before):
                target.write_value(key, value, timestamp)
        finally:
            target.close()
        os.replace(tmp, victim)

    @invariant()
    def same_bytes_as_the_library(self):
        if hasattr(self, "reader"):
            assert_same(self.reader, self.path)
            snapshot = self.reader.read()
            assert snapshot.files == len(list(Path(self.path).glob("*.db")))
            assert snapshot.skipped == 0


FolderMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestFolderMachine = FolderMachine.TestCase


@given(value=values)
@settings(max_examples=200, deadline=None)
def test_values_are_formatted_as_the_library_formats_them(value):
    assert encoder.format_value(value) == floatToGoString(value)

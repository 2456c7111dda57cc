"""The scrape path as a whole: the same bytes as prometheus_client's registry and
encoders, under concurrency, archiving, growth, corruption and removal of files."""

from __future__ import annotations

import gc
import glob
import gzip
import os
import re
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.exposition import generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as om_exposition

from tamma_metrics import catalogue, record
from tamma_metrics.scrape import encoder, exposition, folder, multiprocess
from tamma_metrics.scrape.encoder import OPENMETRICS, TEXT
from tamma_metrics.scrape.folder import FolderReader
from tests.utils import parse, run_python

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
ACCEPTS = [
    "",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    PROMETHEUS_ACCEPT,
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=values",
]
# Values that differ between two calls whatever the encoder: this process's CPU time
# and memory, how long the database collector took, and the database engine's counts of
# the queries a render makes (django-prometheus's instrumented engine).
# (``escaping=values`` doubles underscores and prefixes U__.)
_VARYING = re.compile(
    rb"^(U__)?(process_|python__?gc_|django__?db__?|django__?cache__?|"
    rb"tamma__?metrics__?collector__?duration__?seconds\{).*$",
    re.MULTILINE,
)


def _normalised(body: bytes) -> bytes:
    return _VARYING.sub(b"", body)


def _library_read(path: str, *, timeout: float | None = None) -> folder.FolderRead:
    """The folder merged by prometheus_client itself, for the registry under test."""
    files = glob.glob(os.path.join(path, "*.db"))
    return folder.FolderRead(list(MultiProcessCollector.merge(files)), len(files), 0)


def _library_body(accept: str, visibility: catalogue.Visibility, monkeypatch) -> bytes:
    chosen, _ = encoder.negotiate(accept)
    # The registry collects when encoded: the library's merge must be in place then.
    with monkeypatch.context() as patch:
        patch.setattr(exposition, "merged_folder", _library_read)
        registry = exposition.build_registry(visibility)
        if chosen.openmetrics:
            return om_exposition.generate_latest(
                registry, escaping=chosen.escaping, version=chosen.version
            )
        return generate_latest(registry, escaping=chosen.escaping)


def _record_some_events() -> None:
    record.ai_request(
        provider="anthropic",
        model='quote"back\\slash\nnewline é',
        request_type="chat",
        outcome="success",
        duration_seconds=3.5,
        tokens={"input": 1200, "output": 300},
        cost_usd=0.021,
    )
    record.code_change(change_type="create", language="python", actor="system", file_type="src")


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ACCEPTS)
def test_a_scrape_is_byte_for_byte_what_prometheus_client_writes(accept, monkeypatch):
    _record_some_events()
    ours = exposition.render(accept=accept)
    theirs = _library_body(accept, catalogue.EVERYTHING, monkeypatch)
    assert ours.content_type == encoder.negotiate(accept)[1]
    assert _normalised(ours.body) == _normalised(theirs)
    assert ours.body.count(b"\n") > 100


@pytest.mark.django_db
def test_a_restricted_caller_gets_the_library_bytes_of_its_families(monkeypatch):
    _record_some_events()
    business = frozenset(f.name for f in catalogue.families() if f.audience == "business")
    visibility = catalogue.Visibility(business, False)
    for accept in ("", PROMETHEUS_ACCEPT):
        ours = exposition.render(accept=accept, visibility=visibility).body
        assert _normalised(ours) == _normalised(_library_body(accept, visibility, monkeypatch))
        assert b"tamma_ai_requests" not in ours  # an operations family
        assert b"# TYPE tamma_issues_processed" in ours


@pytest.mark.django_db
def test_name_filter_serves_the_samples_the_library_serves(monkeypatch):
    _record_some_events()
    wanted = ["tamma_ai_tokens_total", "tamma_metrics_collector_up", "tamma_queue_depth"]
    ours = exposition.render(names=wanted).body.decode()
    with monkeypatch.context() as patch:
        patch.setattr(exposition, "merged_folder", _library_read)
        registry = exposition.build_registry().restricted_registry(wanted)
        theirs = generate_latest(registry).decode()
    # The library collects a restricted registry from a set: its family order varies.
    assert parse(ours) == parse(theirs)
    assert set(ours.splitlines()) == set(theirs.splitlines())
    assert {name for name, _ in parse(ours)} == set(wanted)


@pytest.mark.django_db
def test_gzip_is_the_same_body_compressed():
    plain = exposition.render(accept=PROMETHEUS_ACCEPT)
    zipped = exposition.render(accept=PROMETHEUS_ACCEPT, accept_encoding="gzip, deflate")
    assert zipped.content_encoding == "gzip"
    assert _normalised(gzip.decompress(zipped.body)) == _normalised(plain.body)


@pytest.mark.django_db
def test_a_scrape_served_from_the_gauge_cache_runs_no_query(django_assert_num_queries, settings):
    settings.TAMMA_METRICS = {"DATABASE_CACHE_SECONDS": 5}
    with CaptureQueriesContext(connection) as first:
        exposition.render()  # one GROUP BY per gauge family, which fills the cache
    selects = [q["sql"] for q in first.captured_queries if "GROUP BY" in q["sql"]]
    assert len(selects) == len(exposition.queries.GAUGES)
    with django_assert_num_queries(0):
        body = exposition.render().body
    assert b'tamma_metrics_collector_up{collector="database"} 1.0' in body


# -- the reader under change -----------------------------------------------------------


def _key(metric: str, sample: str, **labels: str) -> str:
    return mmap_key(metric, sample, list(labels), list(labels.values()), "help")


def _write(path: Path, values: dict[str, float]) -> None:
    target = MmapedDict(str(path))
    try:
        for key, value in values.items():
            target.write_value(key, value, 0.0)
    finally:
        target.close()


def _text(reader: FolderReader) -> str:
    return b"".join(reader.chunks(TEXT)[0]).decode()


def _library_text(path: Path) -> str:
    class Folder:
        def collect(self):
            return MultiProcessCollector.merge(glob.glob(str(path / "*.db")))

    return generate_latest(Folder()).decode()


def test_a_file_grown_past_its_mapping_is_remapped_and_read(tmp_path):
    _write(tmp_path / "counter_1.db", {_key("jobs", "jobs_total", n="0"): 1.0})
    reader = FolderReader(str(tmp_path))
    assert _text(reader) == _library_text(tmp_path)
    # 2,000 more keys: the writer doubles the file from 64 KiB while the reader has it
    # mapped at its old size.
    more = {_key("jobs", "jobs_total", n=str(i)): float(i) for i in range(2000)}
    _write(tmp_path / "counter_1.db", more)
    assert os.path.getsize(tmp_path / "counter_1.db") > 1 << 16
    assert _text(reader) == _library_text(tmp_path)
    assert 'jobs_total{n="1999"} 1999.0' in _text(reader)


def test_the_index_forgets_removed_and_replaced_files(tmp_path):
    _write(tmp_path / "counter_1.db", {_key("a", "a_total", k=str(i)): 1.0 for i in range(50)})
    _write(tmp_path / "counter_2.db", {_key("b", "b_total", k=str(i)): 2.0 for i in range(30)})
    reader = FolderReader(str(tmp_path))
    _text(reader)
    assert len(reader.keys) == 80
    (tmp_path / "counter_1.db").unlink()
    assert _text(reader) == _library_text(tmp_path)
    assert (sorted(reader.files), len(reader.keys)) == (["counter_2.db"], 30)
    # Replaced under the same name (a new inode): read afresh, not appended to.
    _write(tmp_path / "new.tmp", {_key("c", "c_total"): 5.0})
    os.replace(tmp_path / "new.tmp", tmp_path / "counter_2.db")
    assert _text(reader) == _library_text(tmp_path)
    assert len(reader.keys) == 1
    assert [m.name for m in reader.metrics] == ["c"]


def test_a_file_that_turns_corrupt_is_skipped_until_it_changes(tmp_path):
    _write(tmp_path / "counter_1.db", {_key("a", "a_total"): 1.0})
    _write(tmp_path / "counter_2.db", {_key("b", "b_total"): 2.0})
    reader = FolderReader(str(tmp_path))
    assert reader.read().files == 2
    # Its used header now points past the end of the file: not ours to guess at.
    with open(tmp_path / "counter_2.db", "r+b") as handle:
        handle.write((1 << 20).to_bytes(4, "little"))
    snapshot = reader.read()
    assert (snapshot.files, snapshot.skipped) == (1, 1)
    assert _text(reader) == "# HELP a_total help\n# TYPE a_total counter\na_total 1.0\n"
    assert "counter_2.db" in reader.bad
    os.remove(tmp_path / "counter_2.db")
    _write(tmp_path / "counter_2.db", {_key("b", "b_total"): 3.0})
    assert (reader.read().files, reader.read().skipped) == (2, 0)
    assert "b_total 3.0" in _text(reader)


def test_a_file_truncated_in_place_is_read_again_without_a_crash(tmp_path):
    path = tmp_path / "counter_1.db"
    _write(path, {_key("a", "a_total", k=str(i)): 1.0 for i in range(3000)})
    reader = FolderReader(str(tmp_path))
    _text(reader)
    os.truncate(path, 0)  # nothing in prometheus_client does this; a stray tool might
    assert reader.read().skipped == 1  # empty: skipped as prometheus_client cannot read it
    _write(path, {_key("a", "a_total", k="x"): 4.0})
    assert _text(reader) == _library_text(tmp_path)


def test_a_merge_that_fails_halfway_leaves_nothing_stale(tmp_path, monkeypatch):
    """Values read but not merged must not count as unchanged at the next scrape: the
    reader rebuilds from the files after a failure instead of serving old values."""
    path = tmp_path / "counter_1.db"
    _write(path, {_key("a", "a_total", k=str(i)): 1.0 for i in range(3)})
    reader = FolderReader(str(tmp_path))
    _text(reader)
    _write(path, {_key("a", "a_total", k=str(i)): 7.0 for i in range(3)})

    def fails(self):
        raise MemoryError("in the middle of a merge")

    with monkeypatch.context() as patch:
        patch.setattr(folder._Sum, "compute", fails)
        with pytest.raises(MemoryError):
            reader.read()
    assert _text(reader) == _library_text(tmp_path)
    assert 'a_total{k="2"} 7.0' in _text(reader)


def test_threads_scraping_while_a_writer_appends_never_see_a_counter_go_back(tmp_path):
    """gthread workers: two threads scrape one reader while a writer appends keys and
    increments values; every body parses and no counter decreases between scrapes."""
    path = tmp_path / "counter_7.db"
    _write(path, {_key("jobs", "jobs_total", n="0"): 0.0})
    reader = FolderReader(str(tmp_path))
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        target = MmapedDict(str(path))
        try:
            for step in range(1, 3001):
                target.write_value(_key("jobs", "jobs_total", n="0"), float(step), 0.0)
                if step % 3 == 0:  # new series now and then: the file grows and remaps
                    target.write_value(_key("jobs", "jobs_total", n=str(step)), 1.0, 0.0)
        finally:
            target.close()
            stop.set()

    def scrape(fmt: encoder.Format) -> None:
        last = -1.0
        try:
            while not stop.is_set():
                body = b"".join(reader.chunks(fmt)[0]) + (encoder.EOF if fmt.openmetrics else b"")
                samples = parse(body.decode(), openmetrics=fmt.openmetrics)
                value = samples.value("jobs_total", n="0")
                assert value >= last
                last = value
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scrape, args=(fmt,)) for fmt in (TEXT, OPENMETRICS)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    final = parse(_text(reader))
    assert final.value("jobs_total", n="0") == 3000.0
    assert len(final) == 1001
    assert _text(reader) == _library_text(tmp_path)


def test_archiving_during_scrapes_counts_every_dead_workers_value_once(tmp_path):
    """The archive step folds workers into the archive while threads scrape: each
    scrape sees each value exactly once, in the worker's file or in the archive."""
    workers = range(100, 140)
    for pid in workers:
        _write(tmp_path / f"counter_{pid}.db", {_key("jobs", "jobs_total"): 1.0})
    reader = FolderReader(str(tmp_path))
    seen: list[float] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            seen.append(parse(_text(reader)).value("jobs_total"))

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for pid in workers:
            multiprocess.archive_process(pid, str(tmp_path))
            scraped = len(seen)
            for _ in range(2000):  # let a scrape in between two archive steps
                if len(seen) > scraped:
                    break
                time.sleep(0.001)
    finally:
        done.set()
        scraper.join(timeout=60)
    assert set(seen) == {40.0}
    assert len(seen) >= len(workers)
    assert sorted(reader.files) == ["counter_archive.db"]
    assert parse(_text(reader)).value("jobs_total") == 40.0


SINGLE_PROCESS_COMPARE = """
import re, sys
import django
django.setup()
from django.core.management import call_command
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as om
from tamma_metrics import record
from tamma_metrics.scrape import exposition
call_command("migrate", verbosity=0)
record.ai_request(provider="openai", model="gpt", request_type="chat", outcome="error",
                  duration_seconds=0.5, tokens={"input": 10})
varying = re.compile(
    rb"^(process_|python_gc_|django_db_|django_cache_|tamma_metrics_collector_duration_seconds[{]).*$",
    re.MULTILINE)
# The first render touches the cache, whose django-prometheus metrics register then: compare
# renders of the registry as it stays.
exposition.render()
for accept, encode in (("", generate_latest), ("application/openmetrics-text", om.generate_latest)):
    ours = exposition.render(accept=accept).body
    theirs = encode(exposition.build_registry())
    assert varying.sub(b"", ours) == varying.sub(b"", theirs), (ours, theirs)
    assert b"tamma_ai_requests_total" in ours
print("same")
"""


def test_single_process_mode_encodes_the_registry_as_the_library_does():
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", TAMMA_TEST_SINGLE_PROCESS="1")
    assert run_python("-c", SINGLE_PROCESS_COMPARE, env=env).stdout.strip() == "same"


def test_the_index_holds_a_bounded_heap_per_series_and_one_copy_of_shared_lines(tmp_path):
    """Memory, not time: the index of a folder keeps no object per output series, the
    lines both formats render alike once, and its Python heap per line stays within a
    generous bound (tracemalloc counts allocations, not the machine's speed)."""
    counters = {_key("jobs", "jobs_total", model=f"m{i % 7}", run=str(i)): i for i in range(3000)}
    buckets = {
        _key("wait", "wait_bucket", model=f"m{i % 7}", run=str(i), le=le): 1.0
        for i in range(300)
        for le in ("0.1", "1.0", "10.0", "+Inf")
    }
    _write(tmp_path / "counter_1.db", counters)
    _write(tmp_path / "histogram_1.db", buckets)
    folder.clear_caches()
    encoder.clear_caches()
    gc.collect()
    tracemalloc.start()
    try:
        reader = FolderReader(str(tmp_path))
        text = b"".join(reader.chunks(TEXT)[0])
        b"".join(reader.chunks(OPENMETRICS)[0])
        del text
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    lines = 3000 + 300 * (4 + 1)  # the histogram's buckets and _count (no _sum written)
    assert sum(len(m.values) for m in reader.metrics) == lines
    # type(), not isinstance(): a dead weak proxy among the objects raises on isinstance.
    assert not [o for o in gc.get_objects() if type(o) is folder._Series]
    for metric in reader.metrics:
        assert metric.blocks[TEXT] is metric.blocks[OPENMETRICS]
    # About 645 bytes a line on CPython 3.11, the encoded line's 40 included; 820 in text
    # and 870 in both formats when each series, bucket key and file value was an object.
    assert held / lines < 750, held / lines

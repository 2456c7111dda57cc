"""The multiprocess folder: archiving dead workers' files, skipping broken ones, the lock."""

from __future__ import annotations

import errno
import os
import struct
import threading
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from tamma_metrics.scrape import multiprocess
from tamma_metrics.scrape.folder import read_folder
from tamma_metrics.scrape.multiprocess import FolderError, LockTimeout

BUCKETS = ("1.0", "5.0", "+Inf")


def key(metric: str, sample: str, **labels: str) -> str:
    return mmap_key(metric, sample, list(labels), list(labels.values()), f"{metric} help")


def write(path: Path, values: dict[str, float | tuple[float, float]]) -> None:
    """Write a file as prometheus_client does: {mmap key: value or (value, timestamp)}."""
    target = MmapedDict(str(path))
    try:
        for name, value in values.items():
            value, timestamp = value if isinstance(value, tuple) else (value, 0.0)
            target.write_value(name, value, timestamp)
    finally:
        target.close()


def worker_files(folder: Path, pid: int, scale: float = 1.0) -> None:
    """One worker's counter and histogram files, values scaled by ``scale``."""
    write(
        folder / f"counter_{pid}.db",
        {
            key("jobs", "jobs_total", kind="a"): 2 * scale,
            key("jobs", "jobs_total", kind="b"): 3 * scale,
        },
    )
    write(
        folder / f"histogram_{pid}.db",
        {
            key("wait", "wait_bucket", le="1.0"): 1 * scale,
            key("wait", "wait_bucket", le="5.0"): 2 * scale,
            key("wait", "wait_bucket", le="+Inf"): 0.0,
            key("wait", "wait_sum"): 7.5 * scale,
        },
    )


def samples(folder: Path) -> dict[tuple[str, frozenset], float]:
    read = read_folder(str(folder))
    return {(s.name, frozenset(s.labels.items())): s.value for m in read.metrics for s in m.samples}


def names(folder: Path) -> set[str]:
    return set(os.listdir(folder)) - {multiprocess.LOCK_NAME, multiprocess.GATE_NAME}


def test_archive_folds_a_dead_workers_counters_and_histograms_exactly(tmp_path):
    worker_files(tmp_path, 101)
    worker_files(tmp_path, 102, scale=10)
    before = samples(tmp_path)
    assert before[("jobs_total", frozenset({("kind", "a")}))] == 22
    assert before[("wait_count", frozenset())] == 33

    result = multiprocess.archive_process(101, str(tmp_path))

    assert sorted(result.folded) == ["counter_101.db", "histogram_101.db"]
    assert names(tmp_path) == {
        "counter_102.db",
        "histogram_102.db",
        "counter_archive.db",
        "histogram_archive.db",
    }
    assert samples(tmp_path) == before


def test_many_dead_workers_leave_one_archive_per_type_and_every_count(tmp_path):
    for pid in range(1000, 1040):
        worker_files(tmp_path, pid, scale=pid - 999)
        multiprocess.archive_process(pid, str(tmp_path))
    assert names(tmp_path) == {"counter_archive.db", "histogram_archive.db"}
    scale = sum(range(1, 41))  # 820
    after = samples(tmp_path)
    assert after[("jobs_total", frozenset({("kind", "a")}))] == 2 * scale
    assert after[("jobs_total", frozenset({("kind", "b")}))] == 3 * scale
    assert after[("wait_bucket", frozenset({("le", "5.0")}))] == 3 * scale  # cumulative
    assert after[("wait_sum", frozenset())] == 7.5 * scale
    assert after[("wait_count", frozenset())] == 3 * scale


def test_gauges_of_a_dead_worker_keep_the_meaning_of_their_mode(tmp_path):
    g = key("g", "g", kind="x")
    for pid, value, stamp in ((201, 5.0, 100.0), (202, 9.0, 50.0)):
        write(tmp_path / f"gauge_sum_{pid}.db", {g: value})
        write(tmp_path / f"gauge_min_{pid}.db", {g: value})
        write(tmp_path / f"gauge_max_{pid}.db", {g: value})
        write(tmp_path / f"gauge_mostrecent_{pid}.db", {g: (value, stamp)})
        write(tmp_path / f"gauge_all_{pid}.db", {g: value})
        write(tmp_path / f"gauge_livesum_{pid}.db", {g: value})
    write(tmp_path / "gauge_sum_203.db", {g: 1.0})  # a live worker

    result = multiprocess.archive_process(201, str(tmp_path))
    multiprocess.archive_process(202, str(tmp_path))

    assert sorted(result.dropped) == ["gauge_all_201.db"]
    assert names(tmp_path) == {
        "gauge_sum_203.db",
        "gauge_sum_archive.db",
        "gauge_min_archive.db",
        "gauge_max_archive.db",
        "gauge_mostrecent_archive.db",
    }
    read = {m.name: m for m in read_folder(str(tmp_path)).metrics}
    # One gauge name, several modes: check each archive on its own.
    values = {
        name: MmapedDict.read_all_values_from_file(str(tmp_path / name)) for name in names(tmp_path)
    }
    assert [(v, t) for _, v, t, _ in values["gauge_sum_archive.db"]] == [(14.0, 0.0)]
    assert [v for _, v, _, _ in values["gauge_min_archive.db"]] == [5.0]
    assert [v for _, v, _, _ in values["gauge_max_archive.db"]] == [9.0]
    assert [(v, t) for _, v, t, _ in values["gauge_mostrecent_archive.db"]] == [(5.0, 100.0)]
    assert "g" in read


def test_sum_gauge_total_is_unchanged_by_archiving(tmp_path):
    g = key("open", "open", kind="x")
    for pid, value in ((301, 2.0), (302, 3.0), (303, 4.0)):
        write(tmp_path / f"gauge_sum_{pid}.db", {g: value})
    before = samples(tmp_path)
    multiprocess.archive_process(301, str(tmp_path))
    multiprocess.archive_process(302, str(tmp_path))
    assert samples(tmp_path) == before == {("open", frozenset({("kind", "x")})): 9.0}


def test_foreign_empty_and_corrupt_files_are_skipped_and_counted(tmp_path):
    worker_files(tmp_path, 401)
    good = samples(tmp_path)
    (tmp_path / "junk.db").write_bytes(b"not a metrics file at all")  # foreign name
    (tmp_path / "counter_123.db").write_bytes(b"")  # zero bytes
    # Header says 4096 bytes used, first key 1000 bytes long: truncated or not ours.
    truncated = struct.pack("ii", 4096, 0) + struct.pack("i", 1000) + b"x" * 52
    (tmp_path / "counter_456.db").write_bytes(truncated)
    write(tmp_path / "histogram_789.db", {"not json": 1.0})  # a key that is not ours
    (tmp_path / "notes.txt").write_text("ignored: not *.db")

    for _ in range(2):  # the second time the broken files are known and not read
        read = read_folder(str(tmp_path))
        assert (read.files, read.skipped) == (2, 4)
        assert samples(tmp_path) == good

    for name in ("junk.db", "counter_123.db", "counter_456.db", "histogram_789.db"):
        (tmp_path / name).unlink()
    assert read_folder(str(tmp_path)).skipped == 0


def test_archive_waits_for_a_scrape_holding_the_lock(tmp_path):
    worker_files(tmp_path, 501)
    with (
        multiprocess.folder_lock(str(tmp_path), shared=True, timeout=1),
        pytest.raises(LockTimeout),
    ):
        multiprocess.archive_process(501, str(tmp_path), timeout=0.2)
    assert names(tmp_path) == {"counter_501.db", "histogram_501.db"}  # untouched
    assert multiprocess.archive_process(501, str(tmp_path)).folded


def test_a_scrape_waits_for_the_archive_step(tmp_path):
    worker_files(tmp_path, 502)
    with (
        multiprocess.folder_lock(str(tmp_path), shared=False, timeout=1),
        pytest.raises(LockTimeout),
    ):
        read_folder(str(tmp_path), timeout=0.2)
    assert read_folder(str(tmp_path)).files == 2


def test_a_failure_half_way_leaves_the_files_counting(tmp_path, monkeypatch):
    worker_files(tmp_path, 601)
    multiprocess.archive_process(601, str(tmp_path))
    worker_files(tmp_path, 602)
    before = samples(tmp_path)

    def disk_full(path, values):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(multiprocess, "_write_values", disk_full)
    with pytest.raises(OSError, match="No space"):
        multiprocess.archive_process(602, str(tmp_path))
    assert names(tmp_path) == {
        "counter_602.db",
        "histogram_602.db",
        "counter_archive.db",
        "histogram_archive.db",
    }
    assert samples(tmp_path) == before


def test_process_exited_never_raises_and_retries_later(tmp_path, caplog, monkeypatch):
    multiprocess.process_exited(701, str(tmp_path / "missing"))  # logged, not raised
    assert "could not archive the files of process 701" in caplog.text
    multiprocess._pending.clear()

    worker_files(tmp_path, 702)
    worker_files(tmp_path, 703)
    worker_files(tmp_path, 704)
    monkeypatch.setattr(multiprocess, "ARCHIVE_LOCK_TIMEOUT", 0.1)
    with multiprocess.folder_lock(str(tmp_path), shared=True, timeout=1):
        multiprocess.process_exited(702, str(tmp_path))  # a scrape holds the lock
        multiprocess.process_exited(703, str(tmp_path))
    assert multiprocess._pending == {702, 703}
    # 703's pid now belongs to a new live worker: it carries on with that file.
    multiprocess.process_exited(704, str(tmp_path), live=[703])
    assert multiprocess._pending == set()
    assert names(tmp_path) == {
        "counter_703.db",
        "histogram_703.db",
        "counter_archive.db",
        "histogram_archive.db",
    }


def test_concurrent_scrapes_count_every_value_exactly_once(tmp_path):
    pids = range(2000, 2030)
    for pid in pids:
        worker_files(tmp_path, pid)
    expected = samples(tmp_path)
    done = threading.Event()
    reads, wrong = [0], []

    def scrape() -> None:
        while not done.is_set():
            got = samples(tmp_path)
            reads[0] += 1
            if got != expected:
                wrong.append(got)

    readers = [threading.Thread(target=scrape) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for pid in pids:
            multiprocess.archive_process(pid, str(tmp_path))
            got_before = reads[0]
            while reads[0] == got_before:  # let a scrape run between two archive steps
                threading.Event().wait(0.001)
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert wrong == []
    assert reads[0] >= len(pids)
    assert names(tmp_path) == {"counter_archive.db", "histogram_archive.db"}


def test_empty_folder_removes_metric_files_only(tmp_path):
    worker_files(tmp_path, 801)
    (tmp_path / "counter_archive.db.tmp").write_bytes(b"x")
    (tmp_path / "histogram_9.db.merging").write_bytes(b"x")
    (tmp_path / "README").write_text("keep me")
    assert multiprocess.empty_folder(str(tmp_path)) == 4
    assert names(tmp_path) == {"README"}


def test_check_folder_says_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    missing, a_file = str(tmp_path / "missing"), str(tmp_path / "file")
    cases = {
        None: (
            "unset",
            "PROMETHEUS_MULTIPROC_DIR is not set: set it to an existing, writable folder "
            "before gunicorn starts (prometheus_client picks its storage at import).",
        ),
        "": (
            "empty",
            "PROMETHEUS_MULTIPROC_DIR is set but empty: prometheus_client then writes its "
            "files to the current directory, where no scrape reads them; set it to an "
            "existing, writable folder.",
        ),
        missing: ("missing", f"PROMETHEUS_MULTIPROC_DIR={missing!r} does not exist."),
        a_file: ("not_a_folder", f"PROMETHEUS_MULTIPROC_DIR={a_file!r} is not a folder."),
    }
    for path, (problem, message) in cases.items():
        with pytest.raises(FolderError) as raised:
            multiprocess.check_folder(path)
        assert (raised.value.problem, str(raised.value), raised.value.writable) == (
            problem,
            message,
            True,
        )
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere
    with pytest.raises(FolderError) as raised:
        multiprocess.check_folder(str(tmp_path))
    assert str(raised.value) == f"PROMETHEUS_MULTIPROC_DIR={str(tmp_path)!r} is not writable."
    assert (raised.value.problem, raised.value.writable) == ("not_writable", False)
    monkeypatch.undo()
    assert multiprocess.check_folder(str(tmp_path)) == str(tmp_path)


@pytest.mark.django_db
def test_a_broken_file_in_the_served_folder_does_not_break_the_scrape(metrics):
    from tamma_metrics import record

    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    record.code_change(change_type="create", language="go", actor="system", file_type="go")
    before = metrics()
    assert before.value("tamma_metrics_multiprocess_skipped_files") == 0
    broken = [folder / "junk.db", folder / "counter_123.db", folder / "histogram_99999999.db"]
    broken[0].write_text("junk")
    broken[1].write_bytes(b"")
    write(broken[2], {"not json": 1.0})
    try:
        after = metrics()
    finally:
        for path in broken:
            path.unlink()
    assert after.value("tamma_metrics_multiprocess_skipped_files") == 3
    assert after.value("tamma_metrics_multiprocess_files") == before.value(
        "tamma_metrics_multiprocess_files"
    )
    changes = "tamma_code_changes_total"
    assert after.total(changes) == before.total(changes) > 0
    assert metrics().value("tamma_metrics_multiprocess_skipped_files") == 0


def contents(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(names(folder))}


def test_a_full_folder_leaves_the_archive_step_undone_and_the_folder_as_it_was(
    tmp_path, monkeypatch, caplog
):
    worker_files(tmp_path, 801)
    multiprocess.archive_process(801, str(tmp_path))
    worker_files(tmp_path, 802, scale=10)
    before, served = contents(tmp_path), samples(tmp_path)

    def disk_full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # The real write path (mmap_guard, MmapedDict), failing where a full disk fails.
    monkeypatch.setattr(os, "posix_fallocate", disk_full)
    with pytest.raises(OSError) as raised:
        multiprocess.archive_process(802, str(tmp_path))
    assert raised.value.errno == errno.ENOSPC
    assert contents(tmp_path) == before  # no .tmp, no .merging, no byte changed
    assert samples(tmp_path) == served

    multiprocess._pending.clear()
    multiprocess.process_exited(802, str(tmp_path))  # the master: logged, not raised
    assert multiprocess._pending == {802}
    assert contents(tmp_path) == before
    assert "could not archive the files of process 802: [Errno 28]" in caplog.text
    assert "Traceback" not in caplog.text
    monkeypatch.undo()
    multiprocess.process_exited(803, str(tmp_path))  # the next exit, with room again
    assert multiprocess._pending == set()
    assert names(tmp_path) == {"counter_archive.db", "histogram_archive.db"}
    assert samples(tmp_path) == served


ARCHIVE_ON_A_FULL_TMPFS = """
import sys
from pathlib import Path
from tests.test_multiprocess import worker_files
from tests.utils import fill
from tamma_metrics.scrape import multiprocess
folder = Path(sys.argv[1])
for pid in range(901, 905):
    worker_files(folder, pid, scale=pid)
multiprocess.archive_process(901, str(folder))
fill(folder)
multiprocess.process_exited(902, str(folder))  # the archive needs room: rolled back
multiprocess.process_exited(903, str(folder))
print(sorted(multiprocess._pending))
"""


def test_the_archive_step_on_a_full_tmpfs_rolls_back_and_the_master_lives(tmp_path):
    from tests.utils import ROOT, run_python, tmpfs

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tmpfs(tmp_path / "multiproc", "512k") as folder:
        for pid in range(901, 905):
            worker_files(tmp_path, pid, scale=pid)  # what the folder must keep serving
        multiprocess.archive_process(901, str(tmp_path))
        expected = samples(tmp_path)
        done = run_python("-c", ARCHIVE_ON_A_FULL_TMPFS, str(folder), env=env)
        assert done.stdout.strip() == "[902, 903]"
        assert done.stderr.count("could not archive the files of process") == 3  # 902 twice
        left = sorted(names(folder))
        assert left == sorted(
            ["counter_archive.db", "histogram_archive.db", "filler"]
            + [f"{kind}_{pid}.db" for kind in ("counter", "histogram") for pid in (902, 903, 904)]
        )
        os.remove(folder / "filler")
        assert samples(folder) == expected

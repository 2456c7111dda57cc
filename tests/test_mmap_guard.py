"""A full or read-only multiprocess folder is an OSError the code sees, never a SIGBUS.

The real faults run on a small tmpfs in another process (a SIGBUS there fails the test
instead of killing pytest); the code paths run here with ``posix_fallocate`` failing.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict, mmap_key

from tamma_metrics.scrape import mmap_guard
from tests.utils import ROOT, run_python, tmpfs

KEY_BYTES = 200  # about a key of a labelled series


def key(n: int) -> str:
    return mmap_key("m", "m_total", ["n"], [f"{n:0{KEY_BYTES}d}"], "h")


def values_of(path: Path) -> dict[str, float]:
    return {k: v for k, v, _, _ in MmapedDict.read_all_values_from_file(str(path))}


@pytest.fixture
def no_space(monkeypatch):
    """posix_fallocate fails as on a full filesystem, from when the test calls it."""

    def disk_full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return lambda: monkeypatch.setattr(os, "posix_fallocate", disk_full)


def test_the_installed_prometheus_client_has_what_the_guard_wraps():
    # If one of these fails, prometheus_client changed how it sizes its files: re-read
    # mmap_dict.py and values.py and adapt mmap_guard before relaxing anything here.
    assert mmap_guard.installed()  # by the app's ready()
    assert _INITIAL_MMAP_SIZE == 1 << 16
    init = inspect.signature(mmap_guard._ORIGINAL_INIT)
    assert list(init.parameters) == ["self", "filename", "read_mode"]
    assert list(inspect.signature(mmap_guard._ORIGINAL_INIT_VALUE).parameters) == ["self", "key"]
    growth = inspect.getsource(mmap_guard._ORIGINAL_INIT_VALUE)
    assert "self._capacity *= 2" in growth
    assert "self._f.truncate(self._capacity)" in growth
    assert "self._m = mmap.mmap(self._f.fileno(), self._capacity)" in growth
    creation = inspect.getsource(mmap_guard._ORIGINAL_INIT)
    assert "self._f.truncate(_INITIAL_MMAP_SIZE)" in creation
    assert "capacity = os.fstat(self._f.fileno()).st_size" in creation
    # Process files are made through the values module's global name.
    assert "MmapedDict(filename)" in inspect.getsource(values.MultiProcessValue)
    assert values.MmapedDict is mmap_guard._process_file
    assert mmap_guard._ORIGINAL_FACTORY is MmapedDict


def test_files_are_created_and_grown_with_their_space_claimed(tmp_path, monkeypatch):
    claimed = []
    real = os.posix_fallocate
    monkeypatch.setattr(
        os, "posix_fallocate", lambda fd, off, n: (claimed.append((off, n)), real(fd, off, n))
    )
    path = tmp_path / "counter_1.db"
    mmaped = MmapedDict(str(path))
    assert claimed == [(0, _INITIAL_MMAP_SIZE)]
    for n in range(2 * _INITIAL_MMAP_SIZE // KEY_BYTES):
        mmaped.write_value(key(n), float(n), 0.0)
    assert claimed == [(0, 1 << 16), (0, 1 << 17), (0, 1 << 18)]  # each doubling, claimed
    assert mmaped._capacity == len(mmaped._m) == path.stat().st_size == 1 << 18
    assert path.stat().st_blocks * 512 >= path.stat().st_size  # no hole
    mmaped.close()
    assert values_of(path)[key(7)] == 7.0


def test_a_file_that_cannot_grow_raises_and_keeps_counting(tmp_path, no_space):
    path = tmp_path / "counter_2.db"
    mmaped = MmapedDict(str(path))
    no_space()
    written = 0
    with pytest.raises(OSError) as raised:
        while True:
            mmaped.write_value(key(written), 1.0, 0.0)
            written += 1
    assert raised.value.errno == errno.ENOSPC
    assert mmaped._capacity == len(mmaped._m) == path.stat().st_size == _INITIAL_MMAP_SIZE
    with pytest.raises(OSError):  # and again: no write past the mapping
        mmaped.write_value(key(written), 1.0, 0.0)
    for n in range(written):  # the keys it holds keep counting
        mmaped.write_value(key(n), 2.0, 0.0)
    mmaped.close()
    found = values_of(path)
    assert len(found) == written > 0
    assert set(found.values()) == {2.0}


def test_a_file_whose_space_cannot_be_claimed_is_not_left_behind(tmp_path, no_space):
    no_space()
    with pytest.raises(OSError) as raised:
        MmapedDict(str(tmp_path / "counter_3.db"))
    assert raised.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_a_process_file_that_cannot_be_created_is_kept_in_memory(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(mmap_guard, "_detached", [])
    monkeypatch.setattr(mmap_guard, "_in_memory", {})
    real_claim = mmap_guard._claim

    def folder_full(filename: str) -> None:
        if filename.startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_claim(filename)

    monkeypatch.setattr(mmap_guard, "_claim", folder_full)
    kept = mmap_guard._process_file(str(tmp_path / "counter_4.db"))
    kept.write_value(key(1), 3.0, 0.0)
    assert kept.read_value(key(1)) == (3.0, 0.0)
    kept.close()
    assert os.listdir(tmp_path) == []
    assert mmap_guard.detached() == ["counter_4.db"]
    assert mmap_guard.folder_problem(str(tmp_path)) == "detached"
    assert "cannot create" in caplog.text and "keeps those metrics in memory" in caplog.text


def test_what_was_kept_in_memory_moves_into_the_folder_once_it_has_room(tmp_path, monkeypatch):
    """A worker booted on a full folder loses nothing: once there is room, its scrape moves
    the file in memory into the folder, values and later writes included."""
    monkeypatch.setattr(mmap_guard, "_detached", [])
    monkeypatch.setattr(mmap_guard, "_in_memory", {})
    path = str(tmp_path / "counter_5.db")
    real_claim = mmap_guard._claim
    full = {"now": True}

    def maybe_full(filename: str) -> None:
        if full["now"] and filename.startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_claim(filename)

    monkeypatch.setattr(mmap_guard, "_claim", maybe_full)
    monkeypatch.setattr(
        mmap_guard, "allocate", lambda fd, size: _allocate_unless(full, tmp_path, fd, size)
    )
    kept = mmap_guard._process_file(path)
    for n in range(200):  # past the first page, so the copy is more than one page
        kept.write_value(key(n), float(n), 0.0)
    assert mmap_guard.reattach() == 0  # still full: it stays in memory, unchanged
    assert not os.path.exists(path) and kept.read_value(key(7)) == (7.0, 0.0)
    full["now"] = False
    assert mmap_guard.reattach() == 1
    assert mmap_guard.detached() == [] and mmap_guard.folder_problem(str(tmp_path)) is None
    kept.write_value(key(200), 200.0, 0.0)  # later writes go to the folder's file
    kept.write_value(key(3), 33.0, 0.0)
    found = values_of(path)
    assert len(found) == 201
    assert found[key(3)] == 33.0 and found[key(199)] == 199.0 and found[key(200)] == 200.0
    kept.close()


def _allocate_unless(full: dict[str, bool], folder: Path, fd: int, size: int) -> None:
    """posix_fallocate, failing for files in ``folder`` while it is full (the memory file
    grows as ever)."""
    if full["now"] and os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.posix_fallocate(fd, 0, size)


def test_folder_problem_says_full_and_read_only(tmp_path):
    with tmpfs(tmp_path / "small", "256k") as folder:
        assert mmap_guard.folder_problem(str(folder)) is None
        fd = os.open(folder / "filler", os.O_RDWR | os.O_CREAT)
        os.posix_fallocate(fd, 0, 200 << 10)
        os.close(fd)
        assert mmap_guard.folder_problem(str(folder)) == "full"
        os.remove(folder / "filler")
        run(["mount", "-o", "remount,ro", str(folder)])
        assert mmap_guard.folder_problem(str(folder)) == "read-only"


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


# A process that writes to a file, fills the folder, then keeps adding keys: unguarded,
# the first write into a page the disk has no room for is a SIGBUS (exit -7).
FILL_THEN_GROW = """
import json, os, sys
from pathlib import Path
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from tests.utils import fill
if sys.argv[2] == "guarded":
    from tamma_metrics.scrape import mmap_guard
    mmap_guard.install()
folder = Path(sys.argv[1])
mmaped = MmapedDict(str(folder / "counter_9.db"))
mmaped.write_value("first", 1.0, 0.0)
fill(folder)
written, failed = 0, 0
for n in range(2000):
    try:
        mmaped.write_value(mmap_key("m", "m_total", ["n"], [f"{n:0200d}"], "h"), 1.0, 0.0)
        written += 1
    except OSError as exc:
        failed += 1
        error = exc.errno
try:
    MmapedDict(str(folder / "counter_10.db"))
    created = True
except OSError:
    created = False
print(json.dumps({"written": written, "failed": failed, "errno": error, "created": created}))
"""


def test_a_full_tmpfs_is_enospc_not_sigbus(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tmpfs(tmp_path / "bare", "1m") as folder:
        bare = run_python("-c", FILL_THEN_GROW, str(folder), "bare", env=env, returncode=-7)
        assert bare.stdout == ""  # what the guard is for: SIGBUS, no answer
    with tmpfs(tmp_path / "guarded", "1m") as folder:
        out = json.loads(run_python("-c", FILL_THEN_GROW, str(folder), "guarded", env=env).stdout)
        # The keys that fit in the file's claimed pages were written, the rest refused.
        assert out == {
            "written": out["written"],
            "failed": 2000 - out["written"],
            "errno": errno.ENOSPC,
            "created": False,
        }
        assert 0 < out["written"] < 2000
        assert sorted(os.listdir(folder)) == ["counter_9.db", "filler"]
        assert len(values_of(folder / "counter_9.db")) == 1 + out["written"]


RECORD_ON_A_FULL_FOLDER = """
import sys
from pathlib import Path
import django
django.setup()
from django.core.management import call_command
from tamma_metrics import instruments, record
from tests.utils import fill
call_command("migrate", verbosity=0)
instruments.get_all()
event = dict(provider="p", request_type="chat", outcome="success", duration_seconds=1.5,
             tokens={"input": 800, "output": 200})
record.ai_request(model="before", **event)
fill(Path(sys.argv[2]))
for n in range(60):
    record.ai_request(model=f"m{n}", **event)  # new series: some need the files to grow
record.ai_request(model="before", **event)  # series it has: written whatever the disk
print("survived")
"""


def test_recording_on_a_full_tmpfs_counts_every_lost_event_exactly(tmp_path):
    from tamma_metrics.scrape.folder import read_folder

    with tmpfs(tmp_path / "multiproc", "1m") as folder:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
        }
        done = run_python(
            "-c", RECORD_ON_A_FULL_FOLDER, str(tmp_path / "db.sqlite3"), str(folder), env=env
        )
        assert done.stdout.strip() == "survived"
        assert done.stderr.count("the multiprocess folder is full or read-only") == 1
        samples: dict[tuple[str, str], float] = {}
        for metric in read_folder(str(folder)).metrics:
            for s in metric.samples:
                model = s.labels.get("model") or s.labels.get("stage") or ""
                if s.name.endswith(("_bucket", "_sum")) or not s.value:
                    continue  # a histogram that could not grow may keep its first buckets at 0
                samples[(s.name, model)] = samples.get((s.name, model), 0.0) + s.value
    lost = samples.get(("tamma_metrics_errors_total", "disk"), 0.0)
    recorded = [f"m{n}" for n in range(60) if ("tamma_ai_requests_total", f"m{n}") in samples]
    print(f"\nfull tmpfs: {len(recorded)} of 60 new events recorded, {lost:.0f} counted as lost")
    assert 0 < lost < 60
    assert len(recorded) + lost == 60  # every event recorded or counted as lost, once
    for model in [f"m{n}" for n in range(60)]:
        whole = (
            samples.get(("tamma_ai_requests_total", model)),
            samples.get(("tamma_ai_tokens_total", model)),
            samples.get(("tamma_ai_request_duration_seconds_count", model)),
        )
        assert whole == ((1.0, 1000.0, 1.0) if model in recorded else (None, None, None))
    assert samples[("tamma_ai_requests_total", "before")] == 2.0


@pytest.mark.django_db
def test_the_scrape_serves_the_folder_and_says_when_it_cannot_take_metrics(
    metrics, monkeypatch, caplog
):
    from tamma_metrics import record
    from tamma_metrics.scrape import exposition

    record.code_change(change_type="create", language="go", actor="system", file_type="go")
    healthy = metrics()
    assert healthy.value("tamma_metrics_collector_up", collector="folder") == 1
    assert healthy.value("tamma_metrics_collector_up", collector="database") == 1
    monkeypatch.setattr(mmap_guard, "folder_problem", lambda path: "full")
    full = metrics()
    assert full.value("tamma_metrics_collector_up", collector="folder") == 0
    assert full.value("tamma_metrics_collector_up", collector="database") == 1
    changes = "tamma_code_changes_total"
    assert full.total(changes) == healthy.total(changes) > 0  # still served
    metrics()
    assert caplog.text.count("cannot take new metrics (full)") == 1  # when it changes
    monkeypatch.undo()
    assert metrics().value("tamma_metrics_collector_up", collector="folder") == 1
    assert exposition._told_problem is None


def test_a_read_only_folder_is_still_read(tmp_path):
    from tamma_metrics.scrape.folder import read_folder

    with tmpfs(tmp_path / "multiproc", "1m") as folder:
        mmaped = MmapedDict(str(folder / "counter_5.db"))
        mmaped.write_value(key(1), 42.0, 0.0)
        mmaped.close()
        before = read_folder(str(folder))  # also creates the lock files
        run(["mount", "-o", "remount,ro", str(folder)])
        after = read_folder(str(folder))
        assert [m.samples for m in after.metrics] == [m.samples for m in before.metrics]
        assert after.metrics[0].samples[0].value == 42.0
        assert mmap_guard.folder_problem(str(folder)) == "read-only"

"""A multiprocess folder whose size, and scrape cost, stay bounded under worker churn.

prometheus_client writes one file per process and type (``counter_<pid>.db``,
``histogram_<pid>.db``, ``gauge_<mode>_<pid>.db``) and every scrape reads all of them.
Files of dead workers are never removed (only ``live*`` gauges are, by
``mark_process_dead``), so with ``max_requests`` or crashing workers the folder, and
each scrape, grow without end. Here:

- ``process_exited(pid)`` runs in the gunicorn master once it has reaped a worker (so
  the pid cannot be in use by that worker any more). It folds the worker's counter,
  histogram, summary and ``sum``/``min``/``max``/``mostrecent`` gauge files into one
  ``<type>_archive.db`` per type and deletes them; ``all`` gauges (a series per pid) of
  the dead worker are deleted, ``live*`` ones removed as prometheus_client does.
- a scrape (``tamma_metrics.scrape.folder``) holds a shared ``flock`` while it reads the
  files and skips files that are empty, foreign or unreadable instead of failing.
  The archive step holds the same lock exclusively, so a scrape sees a dead worker's
  values exactly once: in its own file or in the archive, never both, never neither.

The archive is rewritten to a temporary file and renamed over the old one, and the
worker's file is moved aside first, so an error half-way leaves the folder as it was.
A full or read-only folder is such an error (``mmap_guard`` turns what would be a SIGBUS
into an OSError): the master logs it, keeps the worker's files where they were, still
counted, and tries again at the next worker exit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import mark_process_dead

from ..selfmetrics import DISK_ERRNOS
from . import mmap_guard

__all__ = [
    "ArchiveResult",
    "FolderError",
    "LockTimeout",
    "archive_process",
    "check_folder",
    "empty_folder",
    "folder_lock",
    "process_exited",
    "signature",
]

logger = logging.getLogger(__name__)

LOCK_NAME = "tamma-archive.lock"  # not *.db: never read as metrics
GATE_NAME = "tamma-archive.gate"
ARCHIVE_ID = "archive"
ASIDE_SUFFIX = ".merging"  # a worker's file while it is being folded
TMP_SUFFIX = ".tmp"  # an archive being written
ARCHIVE_LOCK_TIMEOUT = 10.0  # the master waits this long for running scrapes
READ_LOCK_TIMEOUT = 10.0  # a scrape waits this long for an archive step

# What prometheus_client itself names its files: <type>_<id>.db, gauges with their mode.
_GAUGE_MODES = ("all", "min", "max", "sum", "mostrecent")
FILE_NAME = re.compile(
    r"^(?P<prefix>counter|histogram|summary|gauge_(?:live)?(?:"
    + "|".join(_GAUGE_MODES)
    + r"))_(?P<id>[A-Za-z0-9-]+)\.db$"
)

Value = tuple[float, float]  # (value, timestamp) as MmapedDict stores them


def _add(old: Value | None, new: Value) -> Value:
    return new if old is None else (old[0] + new[0], 0.0)


def _lowest(old: Value | None, new: Value) -> Value:
    return new if old is None or new[0] < old[0] else old


def _highest(old: Value | None, new: Value) -> Value:
    return new if old is None or new[0] > old[0] else old


def _latest(old: Value | None, new: Value) -> Value:
    return new if old is None or new[1] >= old[1] else old


# How a dead process's values join the archive, per file prefix. Counters, histograms
# (per-bucket values, _sum) and summaries add up; non-live gauges keep the meaning their
# mode gives them over dead processes.
_FOLD: dict[str, Callable[[Value | None, Value], Value]] = {
    "counter": _add,
    "histogram": _add,
    "summary": _add,
    "gauge_sum": _add,
    "gauge_min": _lowest,
    "gauge_max": _highest,
    "gauge_mostrecent": _latest,
}
# A series per pid: a dead worker's would stay forever and grow with every restart.
_DROP = {"gauge_all"}


class FolderError(Exception):
    """The multiprocess folder is not set, empty, missing, not a folder or not writable
    (``problem`` says which)."""

    def __init__(self, message: str, *, problem: str = "missing", writable: bool = True) -> None:
        super().__init__(message)
        self.problem = problem  # unset, empty, missing, not_a_folder or not_writable
        self.writable = writable  # False: the folder exists but cannot be written


class LockTimeout(Exception):
    """The folder lock could not be taken in time."""


def check_folder(path: str | None) -> str:
    """Return ``path`` if it is a writable folder; raise FolderError saying what is wrong."""
    if path is None:
        raise FolderError(
            "PROMETHEUS_MULTIPROC_DIR is not set: set it to an existing, writable folder "
            "before gunicorn starts (prometheus_client picks its storage at import).",
            problem="unset",
        )
    if not path:
        raise FolderError(
            "PROMETHEUS_MULTIPROC_DIR is set but empty: prometheus_client then writes its "
            "files to the current directory, where no scrape reads them; set it to an "
            "existing, writable folder.",
            problem="empty",
        )
    if not os.path.exists(path):
        raise FolderError(f"PROMETHEUS_MULTIPROC_DIR={path!r} does not exist.", problem="missing")
    if not os.path.isdir(path):
        raise FolderError(
            f"PROMETHEUS_MULTIPROC_DIR={path!r} is not a folder.", problem="not_a_folder"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise FolderError(
            f"PROMETHEUS_MULTIPROC_DIR={path!r} is not writable.",
            problem="not_writable",
            writable=False,
        )
    return path


def empty_folder(path: str) -> int:
    """Delete the metric files (and leftovers of the archive step); return how many.

    Only ``*.db`` and the archive's working files go: a folder set by mistake to a
    directory with other content keeps that content. The lock files stay, since a
    process could hold them.
    """
    removed = 0
    for pattern in ("*.db", f"*.db{ASIDE_SUFFIX}", f"*.db{TMP_SUFFIX}"):
        for name in glob.glob(os.path.join(glob.escape(path), pattern)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)
                removed += 1
    return removed


def _flock(fd: int, operation: int, deadline: float, path: str) -> None:
    """flock with LOCK_NB polling until ``deadline``: a stuck holder cannot hang us."""
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                raise LockTimeout(f"the lock of {path} was not free in time") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.01)


def _open(path: str, name: str, *, shared: bool = False) -> int:
    target = os.path.join(path, name)
    try:
        return os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if not shared or exc.errno not in (errno.EROFS, errno.EACCES):
            raise
        # A read-only folder can still be read: flock needs no write access.
        return os.open(target, os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def folder_lock(path: str, *, shared: bool, timeout: float) -> Iterator[None]:
    """Shared (scrapes) or exclusive (archive step) lock on the folder, writer first.

    Two ``flock``s: readers pass the gate (shared, for an instant) and then hold the
    lock shared while they read; the writer holds the gate exclusively while it waits
    for the lock, so new scrapes queue behind it and a steady stream of overlapping
    scrapes cannot starve it. The kernel drops both locks if their holder dies.
    """
    deadline = time.monotonic() + timeout
    gate = _open(path, GATE_NAME, shared=shared)
    try:
        lock = _open(path, LOCK_NAME, shared=shared)
    except BaseException:
        os.close(gate)
        raise
    try:
        if shared:
            _flock(gate, fcntl.LOCK_SH, deadline, path)
            try:
                _flock(lock, fcntl.LOCK_SH, deadline, path)
            finally:
                fcntl.flock(gate, fcntl.LOCK_UN)
        else:
            _flock(gate, fcntl.LOCK_EX, deadline, path)
            _flock(lock, fcntl.LOCK_EX, deadline, path)
        yield
    finally:
        os.close(lock)  # closing releases the locks
        os.close(gate)


# -- the archive step (gunicorn master) ------------------------------------------------


@dataclass
class ArchiveResult:
    folded: list[str] = field(default_factory=list)  # file names merged into archives
    dropped: list[str] = field(default_factory=list)  # file names deleted unmerged


def _read_values(path: str) -> dict[str, Value]:
    return {
        key: (value, timestamp)
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path)
    }


def _write_values(path: str, values: dict[str, Value]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    target = MmapedDict(path)
    try:
        for key, (value, timestamp) in values.items():
            target.write_value(key, value, timestamp)
    finally:
        target.close()


def _fold_file(folder: str, name: str, prefix: str) -> None:
    """Merge one dead process's file into ``<prefix>_archive.db``; all or nothing."""
    source = os.path.join(folder, name)
    aside = source + ASIDE_SUFFIX
    archive = os.path.join(folder, f"{prefix}_{ARCHIVE_ID}.db")
    tmp = archive + TMP_SUFFIX
    os.replace(source, aside)  # out of every scrape's sight, but not lost
    try:
        merged = _read_values(archive) if os.path.exists(archive) else {}
        fold = _FOLD[prefix]
        for key, value in _read_values(aside).items():
            merged[key] = fold(merged.get(key), value)
        _write_values(tmp, merged)
        os.replace(tmp, archive)
    except BaseException:
        # Nothing was merged: put the file back so its values keep counting.
        os.replace(aside, source)
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    # Its values are in the archive now; a leftover aside file is never read.
    with contextlib.suppress(OSError):
        os.remove(aside)


def _files_of(folder: str, pid: int) -> list[tuple[str, str]]:
    """(file name, prefix) of the process ``pid``'s files."""
    found = []
    for name in os.listdir(folder):
        match = FILE_NAME.match(name)
        if match and match["id"] == str(pid):
            found.append((name, match["prefix"]))
    return found


def archive_process(
    pid: int, path: str | None = None, *, timeout: float | None = None
) -> ArchiveResult:
    """Fold the files of the dead process ``pid`` into the archives and delete them.

    Only call it for a process that has exited and been reaped by the caller: a live
    process would keep writing to a file that is gone. Raises LockTimeout when scrapes
    hold the lock longer than ``timeout``, and OSError on I/O errors; in both cases the
    files not yet folded are left as they were, still counted.
    """
    folder = check_folder(path or os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    mmap_guard.install()  # the archive's writes: ENOSPC raised, not SIGBUS in the master
    result = ArchiveResult()
    if timeout is None:
        timeout = ARCHIVE_LOCK_TIMEOUT
    with folder_lock(folder, shared=False, timeout=timeout):
        mark_process_dead(pid, folder)  # live* gauges: the process no longer counts
        for name, prefix in _files_of(folder, pid):
            if prefix in _DROP:
                os.remove(os.path.join(folder, name))
                result.dropped.append(name)
            elif prefix in _FOLD:
                _fold_file(folder, name, prefix)
                result.folded.append(name)
    return result


_pending: set[int] = set()  # reaped workers whose files could not be archived yet


def process_exited(pid: int, path: str | None = None, *, live: Iterable[int] = ()) -> None:
    """gunicorn ``child_exit``: archive a reaped worker; never raises into the master.

    A worker whose archive step failed (lock timeout, I/O error) is retried on the next
    call, unless its pid now belongs to a new worker in ``live``, which then carries on
    from the same file as prometheus_client does on pid reuse.
    """
    live_pids = set(live)
    _pending.add(pid)
    for dead in sorted(_pending):
        if dead in live_pids:
            _pending.discard(dead)
            continue
        try:
            archive_process(dead, path)
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
                # No traceback: this repeats at every worker exit until there is room.
                logger.error(
                    "tamma_metrics: could not archive the files of process %s: %s; they "
                    "stay in the folder, still counted, and are archived at a later exit",
                    dead,
                    exc,
                )
            else:
                logger.exception("tamma_metrics: could not archive the files of process %s", dead)
            try:
                # The live gauges at least: the process is gone.
                mark_process_dead(dead, path or os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
            except Exception:
                logger.exception("tamma_metrics: mark_process_dead(%s) failed", dead)
        else:
            _pending.discard(dead)


# -- the read side --------------------------------------------------------------------


def signature(stat: os.stat_result) -> tuple[int, int, int]:
    """What says a file changed: (inode, size, modification time)."""
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

"""A full or read-only multiprocess folder is an error the code sees, never a SIGBUS.

prometheus_client's ``MmapedDict`` creates and grows its file with ``truncate()``,
which makes a sparse file: a page gets its disk space only when first written through
the memory mapping, and when the filesystem is full (a tmpfs such as /dev/shm fills up)
that write kills the process with SIGBUS: a worker on a scrape, the gunicorn master on
the archive step. ``install()`` makes ``posix_fallocate`` claim the space first, where
the library creates a file and where it grows one, so running out of space is an
``OSError`` before any new page is written, and every page a mapping covers is backed.

- A new file whose space cannot be claimed is removed again and the OSError raised.
- A file that cannot grow raises from ``_init_value`` (a new key): the dict keeps its
  old mapping and capacity, so existing keys keep counting and a later new key tries
  again. ``record`` counts such events under ``metrics_errors_total{stage="disk"}``.
- A process whose metric file cannot even be created (a worker started while the
  folder is full) keeps that file in memory instead (``memfd``), so a metric that a
  library builds at start-up (django-prometheus' middleware) does not fail the worker's
  boot, which would stop gunicorn. What it records there is not served yet: it is logged
  once and this process's scrapes report ``collector_up{collector="folder"} 0``; once the
  folder has room, ``reattach`` (run by this process's scrapes, and when it exits) writes
  the file into the folder and maps it there, so what it recorded in memory is served. A
  process that exits while the folder is still full loses it (logged).

This is the one module that touches ``MmapedDict``'s private parts (``__init__`` sizing
the file, ``_init_value`` growing it through ``self._f.truncate``, ``_capacity``, ``_m``,
``_INITIAL_MMAP_SIZE``, ``values.MmapedDict``); tests/test_mmap_guard.py fails should a
release of prometheus_client change them.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import mmap
import os
import re
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict

from ..selfmetrics import DISK_ERRNOS

__all__ = ["allocate", "detached", "folder_problem", "install", "installed", "reattach"]

logger = logging.getLogger(__name__)

# prometheus_client is untyped: its methods as plain callables.
_ORIGINAL_INIT: Callable[..., None] = MmapedDict.__init__
_ORIGINAL_INIT_VALUE: Callable[..., None] = MmapedDict._init_value
_ORIGINAL_FACTORY: Callable[..., MmapedDict] = values.MmapedDict
_lock = threading.Lock()
_installed = False
_detached: list[str] = []  # this process's files kept in memory (file names)
_in_memory: dict[str, MmapedDict] = {}  # their dicts, by the path they belong at
_OWN_FILE = re.compile(r"^[a-z_]+_(?P<pid>[0-9]+)\.db$")


def allocate(fd: int, size: int) -> None:
    """Give the first ``size`` bytes of ``fd`` their disk space (extending the file);
    OSError (ENOSPC, EROFS, ...) when the filesystem cannot. Parts already backed cost
    nothing, so holes left by an unguarded writer get filled too."""
    os.posix_fallocate(fd, 0, size)


class _Allocating:
    """``MmapedDict._f`` while the dict grows: ``truncate`` claims the space first."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def truncate(self, size: int) -> int:
        allocate(self._file.fileno(), size)  # raises before the file changes
        result: int = self._file.truncate(size)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _claim(filename: str) -> None:
    """Create ``filename`` with its first mapping's space claimed (an existing file: its
    whole size), as ``MmapedDict.__init__`` is about to map it; a file created here is
    removed again when the space is not there."""
    created = False
    try:
        fd = os.open(filename, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        created = True
    try:
        # The library maps the file's size, or _INITIAL_MMAP_SIZE when it is empty.
        allocate(fd, os.fstat(fd).st_size or _INITIAL_MMAP_SIZE)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(filename)
        raise
    finally:
        os.close(fd)


def _guarded_init(self: MmapedDict, filename: str, read_mode: bool = False) -> None:
    if not read_mode:
        _claim(filename)
    _ORIGINAL_INIT(self, filename, read_mode)


def _guarded_init_value(self: Any, key: str) -> None:
    file = self._f
    self._f = _Allocating(file)
    try:
        _ORIGINAL_INIT_VALUE(self, key)
    except BaseException:
        # The library doubled _capacity before the failed truncate: what the dict may
        # use is what its mapping covers, or the next key would be written past it.
        self._capacity = len(self._m)
        raise
    finally:
        self._f = file


def _process_file(filename: str) -> MmapedDict:
    """``values.MmapedDict``: this process's file, or, when the folder cannot hold even
    its first page, the same kind of file in memory (see the module docstring)."""
    try:
        return MmapedDict(filename)
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS or not hasattr(os, "memfd_create"):
            raise
        fd = os.memfd_create(os.path.basename(filename), os.MFD_CLOEXEC)
        try:
            # MmapedDict opens a path: the memfd's own, as this process sees it.
            in_memory = MmapedDict(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if not _in_memory:
            atexit.register(_at_exit)  # a worker recycled after the folder has room again
        _detached.append(os.path.basename(filename))
        _in_memory[filename] = in_memory
        logger.error(
            "tamma_metrics: cannot create %s (%s): the multiprocess folder is full or "
            "read-only. This process keeps those metrics in memory, where no scrape "
            "reads them, until it restarts.",
            filename,
            os.strerror(exc.errno),
        )
        return in_memory


def install() -> None:
    """Guard prometheus_client's multiprocess files in this process (idempotent).

    Also claims the space of files this process created before (a library that built
    a metric earlier in start-up), whose unwritten pages would still be holes.
    """
    global _installed
    with _lock:
        if _installed:
            return
        MmapedDict.__init__ = _guarded_init  # type: ignore[method-assign]
        MmapedDict._init_value = _guarded_init_value  # type: ignore[method-assign]
        values.MmapedDict = _process_file  # type: ignore[misc, assignment]
        _installed = True
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        _claim_own_files(folder)


def uninstall() -> None:
    """Undo ``install`` (tests)."""
    global _installed
    with _lock:
        MmapedDict.__init__ = _ORIGINAL_INIT  # type: ignore[method-assign]
        MmapedDict._init_value = _ORIGINAL_INIT_VALUE  # type: ignore[method-assign]
        values.MmapedDict = _ORIGINAL_FACTORY  # type: ignore[misc, assignment]
        _installed = False


def installed() -> bool:
    """Whether ``install`` ran in this process."""
    return _installed


def _claim_own_files(folder: str) -> None:
    pid = str(os.getpid())
    try:
        names = os.listdir(folder)
    except OSError:
        return  # no folder: nothing was created in it either
    for name in names:
        match = _OWN_FILE.match(name)
        if match is None or match["pid"] != pid:
            continue
        try:
            fd = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CLOEXEC)
            try:
                allocate(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("tamma_metrics: could not claim the space of %s: %s", name, exc)


def reattach() -> int:
    """Move this process's metric files kept in memory into the folder, where scrapes read
    them, if it has room now; how many moved. The file is written whole and mapped before
    the dict takes it, so a failure leaves the dict in memory as it was.

    The dict's mapping is swapped between two writes of this process: prometheus_client
    writes under a lock of its own that cannot be taken here, so in a process where
    another thread records at that moment (gthread workers) that one write may land in
    the memory copy (microseconds); sync workers record in the thread that scrapes."""
    moved = 0
    with _lock:
        for filename, in_memory in list(_in_memory.items()):
            try:
                _move(filename, in_memory)
            except OSError as exc:
                logger.debug("tamma_metrics: %s stays in memory: %s", filename, exc)
                continue
            del _in_memory[filename]
            _detached.remove(os.path.basename(filename))
            moved += 1
            logger.warning("tamma_metrics: %s is in the multiprocess folder again", filename)
    return moved


def _at_exit() -> None:
    reattach()
    for filename in _in_memory:
        logger.error(
            "tamma_metrics: %s is lost: this process exits while the multiprocess folder "
            "still cannot take it",
            filename,
        )


def _move(filename: str, in_memory: Any) -> None:
    size = len(in_memory._m)
    fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        allocate(fd, size)
        os.pwrite(fd, in_memory._m[:size], 0)
        file = os.fdopen(fd, "a+b")  # as MmapedDict opens it
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(filename)
        raise
    mapping = mmap.mmap(file.fileno(), size)
    old_file, old_mapping = in_memory._f, in_memory._m
    in_memory._f, in_memory._m, in_memory._fname = file, mapping, filename
    old_mapping.close()
    old_file.close()


def detached() -> list[str]:
    """This process's metric files kept in memory because the folder could not take them."""
    return list(_detached)


def folder_problem(path: str) -> str | None:
    """Why the folder cannot take writes now: ``read-only``, ``full`` (less free than a
    new process's file takes), ``detached`` (this process records in memory), else None."""
    try:
        stat = os.statvfs(path)
    except OSError as exc:
        return os.strerror(exc.errno or errno.EIO)
    if stat.f_flag & os.ST_RDONLY:
        return "read-only"
    if stat.f_bavail * stat.f_frsize < _INITIAL_MMAP_SIZE:
        return "full"
    if _detached:
        return "detached"
    return None

"""Optional push sinks (StatsD, OpenTelemetry, ...) behind one small interface.

Every recorded event that passed the label guard is handed to the dispatcher; when no
backend is configured that is one attribute check. With backends, events go into a
bounded queue drained by one daemon thread per process, so a slow or dead backend never
slows or breaks the caller: a full queue drops the event for the backends (Prometheus
still counts it) and every drop or send failure is counted in
``tamma_metrics_backend_errors_total{backend}``.

Configure in settings::

    TAMMA_METRICS = {"BACKENDS": {
        "statsd": {"host": "127.0.0.1", "port": 8125},
        "otel": {"endpoint": "http://127.0.0.1:4318/v1/metrics"},
    }}

A key names a built-in backend (``statsd``, ``otel``) or is a dotted path to a
``Backend`` subclass; its value is passed to the constructor as keyword arguments.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

from django.utils.module_loading import import_string

from .. import selfmetrics
from ..catalogue import Family
from ..conf import app_settings, on_reset

__all__ = [
    "Backend",
    "Dispatcher",
    "Sample",
    "build",
    "dispatcher",
    "reset",
]

logger = logging.getLogger(__name__)

BUILT_IN = {
    "statsd": "tamma_metrics.backends.statsd.StatsdBackend",
    "otel": "tamma_metrics.backends.otel.OtelBackend",
}
BATCH = 500
FLUSH_SECONDS = 0.5
LOG_EVERY_SECONDS = 60
EXIT_FLUSH_SECONDS = 2.0


class Sample(NamedTuple):
    """One recorded event, as the backends see it (a tuple: cheap to make per event)."""

    family: Family  # its names (base_name, full_name), kind, unit, help and buckets
    operation: str  # inc, observe, set or dec
    value: float
    labels: dict[str, str]

    @property
    def name(self) -> str:
        """The exposed name, e.g. ``tamma_ai_requests_total``."""
        return self.family.full_name

    @property
    def kind(self) -> str:
        """counter, histogram or gauge."""
        return self.family.kind.value


class Backend(ABC):
    """A push sink. ``send`` runs on the dispatcher thread, never on the caller's."""

    name = "backend"

    @abstractmethod
    def send(self, samples: Sequence[Sample]) -> None:
        """Deliver a batch; raise on failure (the dispatcher counts and drops it)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources at exit."""


class Dispatcher:
    """A bounded buffer and one daemon thread that feeds every backend.

    The caller only appends to a deque (atomic under the GIL, no lock, no wake-up);
    the thread drains it every FLUSH_SECONDS, so recording with backends costs about
    what recording without them does.
    """

    def __init__(self, backends: Sequence[Backend], size: int) -> None:
        self.backends = list(backends)
        self.size = size
        self.pending: deque[Sample] = deque()
        self.closing = threading.Event()
        self.wakeup = threading.Event()
        self.pid = os.getpid()
        self._logged: dict[str, float] = {}  # backend name -> when its failure was last logged
        selfmetrics.start_backend_errors("queue", *(backend.name for backend in self.backends))
        self.thread = threading.Thread(target=self._run, name="tamma-metrics-backends", daemon=True)
        self.thread.start()

    def put(self, sample: Sample) -> None:
        pending = self.pending
        if len(pending) >= self.size:
            # The backends miss it; Prometheus still counts it.
            selfmetrics.count_backend_error("queue")
            return
        pending.append(sample)
        if len(pending) == BATCH:  # a burst: do not wait for the next tick
            self.wakeup.set()

    def _run(self) -> None:
        while True:
            self.wakeup.wait(FLUSH_SECONDS)
            self.wakeup.clear()
            closing = self.closing.is_set()
            while self.pending:
                batch: list[Sample] = []
                while self.pending and len(batch) < BATCH:
                    batch.append(self.pending.popleft())
                self._send(batch)
            if closing:
                return

    def _send(self, batch: list[Sample]) -> None:
        for backend in self.backends:
            try:
                backend.send(batch)
            except Exception:
                selfmetrics.count_backend_error(backend.name)
                # A dead server fails every batch: log at most once a minute per backend
                # (every failure is still counted).
                now = time.monotonic()
                if now - self._logged.get(backend.name, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
                    self._logged[backend.name] = now
                    logger.warning(
                        "tamma_metrics: backend %s failed (logged at most every %d s)",
                        backend.name,
                        LOG_EVERY_SECONDS,
                        exc_info=True,
                    )

    def flush(self, timeout: float = 5.0) -> None:
        """Send what is pending and stop (tests, push before exit), at most ``timeout``."""
        self.closing.set()
        self.wakeup.set()
        self.thread.join(timeout)  # bounded: a stuck backend may never return
        for backend in self.backends:
            try:
                backend.close()
            except Exception:
                logger.warning(
                    "tamma_metrics: closing backend %s failed", backend.name, exc_info=True
                )


_lock = threading.Lock()
_dispatcher: Dispatcher | None = None
_configured = False


def build(config: dict[str, dict]) -> list[Backend]:
    """Instantiate the configured backends."""
    backends = []
    for key, options in config.items():
        cls = import_string(BUILT_IN.get(key, key))
        backends.append(cls(**(options or {})))
    return backends


def dispatcher() -> Dispatcher | None:
    """This process's dispatcher, or None when no backend is configured (the hot path:
    one global read once configured)."""
    global _dispatcher, _configured
    if _configured:
        return _dispatcher
    with _lock:
        if not _configured:
            config = app_settings.BACKENDS
            _dispatcher = (
                Dispatcher(build(config), app_settings.BACKEND_QUEUE_SIZE) if config else None
            )
            _configured = True
    return _dispatcher


def _forget_after_fork() -> None:
    # A forked worker has no dispatcher thread: it builds its own on first use.
    global _dispatcher, _configured
    _dispatcher, _configured = None, False


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _flush_at_exit() -> None:
    # A short-lived command or shell must not lose the events still queued. A forked
    # child inherits this hook and the parent's dispatcher object: only the owner flushes.
    target = _dispatcher
    if target is not None and target.pid == os.getpid():
        target.flush(timeout=EXIT_FLUSH_SECONDS)


@on_reset
def reset() -> None:
    """Drain and forget the dispatcher (tests, settings changes)."""
    global _dispatcher, _configured
    with _lock:
        if _dispatcher is not None and _dispatcher.pid == os.getpid():
            _dispatcher.flush()
        _dispatcher, _configured = None, False

"""gunicorn settings for the demo site: ``gunicorn -c project/gunicorn.conf.py project.wsgi``.

Environment: PROMETHEUS_MULTIPROC_DIR (required: an existing, writable folder, emptied
at start), WEB_CONCURRENCY (workers, 3), HOST (127.0.0.1), PORT (8000), METRICS_PORT
(off: a second address that serves only /metrics and /metrics/health), METRICS_HOST
(HOST), MAX_REQUESTS and MAX_REQUESTS_JITTER (off: recycle a worker after so many
requests). Command-line options still override these.
"""

import os
import sys

from tamma_metrics.conf import parse_port
from tamma_metrics.scrape import multiprocess


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        sys.exit(f"gunicorn.conf.py: {name}={raw!r} is not a whole number")


def _port(name: str) -> int | None:
    try:
        return parse_port(os.environ.get(name, "").strip() or None, name)
    except ValueError as exc:
        sys.exit(f"gunicorn.conf.py: {exc}")


wsgi_app = "project.wsgi:application"
workers = _int("WEB_CONCURRENCY", 3)
# The workers inherit it: with a per-process cache each enforces its share of the rates.
os.environ["WEB_CONCURRENCY"] = str(workers)
host = os.environ.get("HOST", "127.0.0.1")
bind = [f"{host}:{_port('PORT') or 8000}"]
metrics_port = _port("METRICS_PORT")
if metrics_port is not None:
    # The middleware recognises the port a request arrived on, not the host.
    bind.append(f"{os.environ.get('METRICS_HOST', host)}:{metrics_port}")
max_requests = _int("MAX_REQUESTS", 0)
max_requests_jitter = _int("MAX_REQUESTS_JITTER", 0)
# gunicorn 27 opens a control socket under ~/.gunicorn by default: servers started
# side by side (tests, several sites on one host) would clash on it.
control_socket_disable = True


def on_starting(server) -> None:
    """Check and empty the multiprocess folder before any worker exists.

    Files left from a previous run would add its counts to this one; without the
    folder each worker would count on its own and /metrics show one worker's events.
    """
    try:
        path = multiprocess.check_folder(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    except multiprocess.FolderError as exc:
        server.log.error("Cannot start: %s", exc)
        sys.exit(1)
    removed = multiprocess.empty_folder(path)
    server.log.info("Multiprocess folder %s emptied (%d files)", path, removed)


def child_exit(server, worker) -> None:
    """In the master, after the worker was reaped: live gauges go, the rest is archived."""
    multiprocess.process_exited(worker.pid, live=server.WORKERS)

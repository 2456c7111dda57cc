"""Helpers for tests that talk to real servers: free ports, polling, HTTP, processes by PID.

Every server binds 127.0.0.1; nothing sleeps a fixed time: callers poll a condition.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now on 127.0.0.1 (TCP by default, or UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until ``done(result)``; return the result or fail with the last one.

    An OSError from the probe (a server not listening yet) counts as not done.
    """
    deadline = time.monotonic() + timeout
    result: Any = None
    while True:
        try:
            result = probe()
            if done(result):
                return result
        except OSError as error:
            result = error
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {result!r}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def http_get(
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    *,
    data: bytes | None = None,
) -> Response:
    """GET (POST when ``data`` is given) without raising on 4xx/5xx and without
    following redirects. A refused or cut connection raises OSError."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as answer:
            return Response(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read())
    except http.client.IncompleteRead as error:
        # Cut in the middle of the body (a worker killed while it answered): a cut
        # connection, like one cut before the headers.
        raise ConnectionResetError(f"the answer was cut: {error!r}") from error


def stop(process: subprocess.Popen, *, grace: float = 30.0) -> None:
    """SIGTERM by PID, wait, then SIGKILL by PID if it did not exit."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def require(binary: str) -> str:
    """The path of a system binary; `make test` installs it (scripts/bootstrap.sh)."""
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is missing: run scripts/bootstrap.sh (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must not pass by skipping
        pytest.skip(message)
    return path


class Server:
    """A server process started in its own folder, stopped by its PID."""

    def __init__(self, argv: Sequence[str], workdir: Path) -> None:
        self.log = workdir / "server.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            list(argv), cwd=workdir, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.process, grace=10)
        self._log_file.close()


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (gunicorn's workers are the master's children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)

"""Helpers for tests that talk to real servers: free ports, polling, processes by PID.

Every server binds 127.0.0.1; nothing sleeps a fixed time: callers poll a condition.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (TCP by default, or UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(probe: Callable[[], T], *, until: Callable[[T], bool] = bool, timeout: float = 30.0) -> T:
    """Call ``probe`` every 50 ms until ``until(result)`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        try:
            last = probe()
            if until(last):
                return last
        except OSError:
            pass  # not up yet
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s; last result: {last!r}")
        time.sleep(0.05)


def http_get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()

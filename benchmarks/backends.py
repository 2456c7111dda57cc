"""What a push backend costs the code that records: time per ``record.ai_request`` call.

Scenarios: no backend; StatsD to a live UDP socket; StatsD to a dead port (nothing
listens: every batch is refused and counted); a stuck backend (``send`` never
returns: the queue fills, then events are dropped and counted); OpenTelemetry with an
in-memory reader. Each call records four events (request, latency, two token types).
The dispatcher thread shares the GIL with the caller, so its work shows up here.

    .venv/bin/python benchmarks/backends.py [--calls 5000] [--repeats 5]

Prints a Markdown table (medians over the repeats of each repeat's median and p99 per
call, and the ratio of medians to no backend).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")  # multiprocess, in-memory DB

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from tamma_metrics import backends, record  # noqa: E402

gate = threading.Event()


class NoopBackend(backends.Backend):
    """Takes every batch and does nothing: the cost of the queue and thread alone."""

    name = "noop"

    def send(self, samples: Sequence[backends.Sample]) -> None:
        pass


class StuckBackend(backends.Backend):
    """A backend whose server hangs: ``send`` waits until the benchmark ends."""

    name = "stuck"

    def send(self, samples: Sequence[backends.Sample]) -> None:
        gate.wait(60)


def one_call() -> None:
    record.ai_request(
        provider="anthropic",
        model="claude-sonnet",
        request_type="chat",
        outcome="success",
        duration_seconds=2.5,
        tokens={"input": 1200, "output": 300},
    )


def measure(calls: int) -> tuple[float, float]:
    """Median and p99 of one call, in microseconds."""
    timings = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        one_call()
        timings.append(clock() - start)
    timings.sort()
    return timings[len(timings) // 2] / 1000, timings[int(len(timings) * 0.99)] / 1000


def scenario(config: dict, calls: int, repeats: int) -> tuple[float, float]:
    medians, tails = [], []
    with override_settings(TAMMA_METRICS={"BACKENDS": config}):
        backends.reset()
        for _ in range(repeats):
            one_call()  # builds the dispatcher; labels admitted on the first run
            median, p99 = measure(calls)
            medians.append(median)
            tails.append(p99)
        gate.set()  # let a stuck backend return so the dispatcher can be drained
        backends.reset()
        gate.clear()
    return statistics.median(medians), statistics.median(tails)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    call_command("migrate", verbosity=0)
    for _ in range(200):
        one_call()  # admissions, caches, imports

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))  # never read: the kernel drops what overflows
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()

    scenarios: list[tuple[str, Callable[[], dict]]] = [
        ("no backend", lambda: {}),
        ("no-op backend (queue and thread only)", lambda: {f"{__name__}.NoopBackend": {}}),
        ("statsd, live UDP listener", lambda: {"statsd": {"port": listener.getsockname()[1]}}),
        ("statsd, dead port (refused, counted)", lambda: {"statsd": {"port": dead_port}}),
        ("stuck backend (queue full, drops counted)", lambda: {f"{__name__}.StuckBackend": {}}),
        ("otel, in-memory reader", lambda: {"otel": {"reader": InMemoryMetricReader()}}),
    ]
    results = []
    for label, config in scenarios:
        results.append((label, *scenario(config(), args.calls, args.repeats)))
    listener.close()

    base = results[0][1]
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    print(f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"Machine: `{uname}`, nproc {os.cpu_count()}, Python {platform.python_version()}")
    print(
        f"Calls: {args.calls} x {args.repeats} repeats of `record.ai_request` "
        "(4 events per call), multiprocess mode\n"
    )
    print("| scenario | median µs/call | p99 µs/call | median vs no backend |")
    print("|---|---:|---:|---:|")
    for label, median, p99 in results:
        print(f"| {label} | {median:.1f} | {p99:.1f} | {median / base:.2f}x |")

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if folder.startswith("/tmp/tamma-test-mp-"):
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

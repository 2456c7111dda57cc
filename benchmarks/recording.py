"""Cost of recording and of a scrape, against raw prometheus_client, in one run.

Recording: one ``record.code_change`` call (label guard + cache + counter) against
prometheus_client's own ``Counter.labels(...).inc()`` with keyword and positional
labels, on the same multiprocess storage. Scrape: rendering /metrics for a superuser
with a given number of series stored.

    .venv/bin/python benchmarks/recording.py [--calls 20000] [--repeats 7]

Prints Markdown: medians over the repeats and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tamma-bench-"))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from prometheus_client import Counter, Histogram  # noqa: E402

from tamma_metrics import record  # noqa: E402
from tamma_metrics.scrape import exposition  # noqa: E402


def per_call_ns(func: Callable[[], None], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        func()
    return (time.perf_counter_ns() - start) / calls


def medians(cases: dict[str, Callable[[], None]], calls: int, repeats: int) -> dict[str, float]:
    """Median ns/call per case; cases take turns so machine noise hits them alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for func in cases.values():
        func()  # warm the caches
    for _ in range(repeats):
        for name, func in cases.items():
            samples[name].append(per_call_ns(func, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)

    raw = Counter("bench_raw_changes_total", "raw prometheus_client", ["a", "b", "c", "d"])
    cases = {
        "record.code_change (guard + cache)": lambda: record.code_change(
            change_type="update", language="python", actor="system", file_type="py"
        ),
        "prometheus_client .labels(**kw).inc()": lambda: raw.labels(
            a="update", b="python", c="system", d="py"
        ).inc(),
        "prometheus_client .labels(*args).inc()": lambda: raw.labels(
            "update", "python", "system", "py"
        ).inc(),
    }
    results = medians(cases, args.calls, args.repeats)
    base = results["prometheus_client .labels(**kw).inc()"]
    print(
        f"### Recording one event ({args.calls} calls x {args.repeats} repeats, "
        "multiprocess storage)\n"
    )
    print("| path | median ns/call | ratio to labels(**kw) |")
    print("|---|---:|---:|")
    for name, value in results.items():
        print(f"| {name} | {value:,.0f} | {value / base:.2f} |")

    # An AI request is five writes: its count, its latency, two token counts, its cost.
    requests = Counter("bench_raw_ai_requests_total", "raw", ["provider", "model", "rt", "o"])
    latency = Histogram("bench_raw_ai_seconds", "raw", ["provider", "model", "rt", "tr"])
    tokens = Counter("bench_raw_ai_tokens_total", "raw", ["provider", "model", "token_type"])
    cost = Counter("bench_raw_ai_cost_total", "raw", ["provider", "model"])

    def raw_ai_request() -> None:
        requests.labels(provider="anthropic", model="sonnet", rt="chat", o="success").inc()
        latency.labels(provider="anthropic", model="sonnet", rt="chat", tr="1k-10k").observe(2.5)
        tokens.labels(provider="anthropic", model="sonnet", token_type="input").inc(1200)
        tokens.labels(provider="anthropic", model="sonnet", token_type="output").inc(300)
        cost.labels(provider="anthropic", model="sonnet").inc(0.021)

    ai = medians(
        {
            "record.ai_request (five writes)": lambda: record.ai_request(
                provider="anthropic",
                model="sonnet",
                request_type="chat",
                outcome="success",
                duration_seconds=2.5,
                tokens={"input": 1200, "output": 300},
                cost_usd=0.021,
            ),
            "the same five prometheus_client writes, labels(**kw)": raw_ai_request,
        },
        args.calls,
        args.repeats,
    )
    raw_five = ai["the same five prometheus_client writes, labels(**kw)"]
    print(f"\n### Recording one AI request ({args.calls} calls x {args.repeats} repeats)\n")
    print("| path | median ns/call | ratio to the raw writes |")
    print("|---|---:|---:|")
    for name, value in ai.items():
        print(f"| {name} | {value:,.0f} | {value / raw_five:.2f} |")

    print("\n### Rendering /metrics (superuser, all families)\n")
    print("| escalation series stored | median ms/scrape | bytes |")
    print("|---|---:|---:|")
    for series in (100, 1000):
        for i in range(series):
            record.escalation(
                escalation_type="blocked",
                severity="low",
                component=f"c{i % 50}",
                reason=f"r{i // 50}",
            )
        times, size = [], 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            size = len(exposition.render().body)
            times.append((time.perf_counter() - start) * 1000)
        print(f"| {series} | {statistics.median(times):.1f} | {size:,} |")


if __name__ == "__main__":
    main()

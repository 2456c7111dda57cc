"""Scrape cost: the incremental folder reader and cached encoder against
prometheus_client's ``MultiProcessCollector`` + ``generate_latest`` on the same folder.

    .venv/bin/python benchmarks/scrape.py [--runs 5] [--quick]

Folders, built in a temporary directory: the `make run` demo (seed_demo, 1,000
issues); every stored family filled to its series cap; the demo after 100 and 1,000
worker recycles (each fake worker writes 30 of the demo's series, then the archive step
folds its files, as gunicorn's child_exit does). Cold is the first scrape of a fresh
reader (its caches empty); warm is a later scrape after 20 values changed, as a live
worker changes them between two scrapes. Ours and the library alternate in each run;
figures are medians, ratios are ours / library in the same run. Memory (RSS and
tracemalloc) is measured in fresh processes. Prints Markdown.
"""

from __future__ import annotations

import argparse
import gc
import glob
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client.exposition import generate_latest  # noqa: E402
from prometheus_client.mmap_dict import MmapedDict  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.openmetrics import exposition as om_exposition  # noqa: E402

from tamma_metrics.scrape import encoder, folder, multiprocess  # noqa: E402
from tamma_metrics.scrape.encoder import GZIP_LEVEL, OPENMETRICS, TEXT  # noqa: E402

PYTHON = sys.executable

FILL_TO_CAPS = """
import os, random, sys
import django
django.setup()
from tamma_metrics import catalogue, instruments
from tamma_metrics.conf import app_settings
random.seed(7)
cap = int(sys.argv[1]) if len(sys.argv) > 1 else int(app_settings.DEFAULT_MAX_SERIES)
for name, instrument in instruments.get_all().items():
    family = catalogue.get(name)
    for i in range(cap):
        child = instrument.labels(*[f"{label}-{i % (7 + n)}-{i}" for n, label in
                                    enumerate(family.labels)]) if family.labels else instrument
        if family.kind.value == "histogram":
            child.observe(random.random() * 100)
        elif family.kind.value == "counter":
            child.inc(random.randint(1, 50))
        else:
            child.set(random.randint(1, 50))
        if not family.labels:
            break
"""


def _env(folder_path: Path, database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DATABASE_URL=f"sqlite:///{database}",
        PROMETHEUS_MULTIPROC_DIR=str(folder_path),
        DEBUG="false",
    )
    return env


def _run(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([PYTHON, *args], cwd=ROOT, env=env, check=True, capture_output=True)


def demo_folder(work: Path) -> Path:
    path = work / "demo"
    path.mkdir()
    env = _env(path, work / "demo.sqlite3")
    _run(["manage.py", "migrate", "--noinput", "-v0"], env)
    _run(["manage.py", "seed_demo", "--issues", "1000"], env)
    return path


def capped_folder(work: Path, cap: int | None = None) -> Path:
    """Every stored family with ``cap`` label sets (its series cap when None)."""
    path = work / f"capped-{cap}"
    path.mkdir()
    _run(["-c", FILL_TO_CAPS, *([str(cap)] if cap else [])], _env(path, work / f"{cap}.sqlite3"))
    return path


def recycled_folder(demo: Path, work: Path, recycles: int) -> Path:
    """The demo folder after ``recycles`` workers each wrote 30 series and exited."""
    path = work / f"recycled-{recycles}"
    shutil.copytree(demo, path)
    rng = random.Random(recycles)
    children: dict[tuple[str, str], list[str]] = {}
    for name in os.listdir(demo):
        prefix = name.split("_")[0]
        for key, *_ in MmapedDict.read_all_values_from_file(str(demo / name)):
            metric, _, labels, _ = json.loads(key)
            labels.pop("le", None)
            child = json.dumps([metric, sorted(labels.items())])
            children.setdefault((prefix, child), []).append(key)
    groups = list(children.items())
    for n in range(recycles):
        pid = 90_000_000 + n  # never a live process
        for (prefix, _), keys in rng.sample(groups, 30):
            target = MmapedDict(str(path / f"{prefix}_{pid}.db"))
            try:
                for key in keys:
                    target.write_value(key, float(rng.randint(1, 5)), 0.0)
            finally:
                target.close()
        multiprocess.archive_process(pid, str(path))
    return path


class _Library:
    def __init__(self, path: Path) -> None:
        self.pattern = os.path.join(path, "*.db")

    def collect(self):
        return MultiProcessCollector.merge(glob.glob(self.pattern), accumulate=True)


def library_render(path: Path, fmt: encoder.Format, zipped: bool) -> bytes:
    source = _Library(path)
    body = om_exposition.generate_latest(source) if fmt.openmetrics else generate_latest(source)
    return gzip.compress(body) if zipped else body  # the library's WSGI app: level 9


def our_render(reader: folder.FolderReader, fmt: encoder.Format, zipped: bool) -> bytes:
    body = b"".join(reader.chunks(fmt)[0])
    if fmt.openmetrics:
        body += encoder.EOF
    return encoder.gzip(body) if zipped else body


def fresh_reader(path: Path) -> folder.FolderReader:
    """A reader as a new process has it: nothing parsed or rendered yet."""
    encoder.clear_caches()
    folder.clear_caches()
    return folder.FolderReader(str(path))


class Changer:
    """Changes values as live workers do between scrapes: 20 increments."""

    def __init__(self, path: Path) -> None:
        self.files = sorted(str(p) for p in path.glob("*.db") if "archive" not in p.name)
        self.keys = {
            f: [k for k, *_ in MmapedDict.read_all_values_from_file(f)] for f in self.files
        }
        self.rng = random.Random(1)

    def change(self) -> None:
        for _ in range(20):
            name = self.rng.choice(self.files)
            target = MmapedDict(name)
            try:
                key = self.rng.choice(self.keys[name])
                value, _ = target.read_value(key)
                target.write_value(key, value + 1, time.time())
            finally:
                target.close()


def _timed(call: Callable[[], bytes]) -> tuple[float, bytes]:
    gc.collect()
    start = time.perf_counter()
    body = call()
    return (time.perf_counter() - start) * 1000, body


def compare(path: Path, fmt: encoder.Format, zipped: bool, runs: int) -> dict[str, float]:
    """Per run: a fresh reader's first scrape and the library's, then three warm scrapes
    after changes, checked against the library's bytes once more."""
    changer = Changer(path)
    cold, warm, library = [], [], []

    def library_and_check(ours: bytes) -> None:
        ms, theirs = _timed(lambda: library_render(path, fmt, zipped))
        library.append(ms)
        if not zipped:
            assert ours == theirs, f"{path.name}: output differs from prometheus_client"

    for _ in range(runs):
        reader = fresh_reader(path)
        ms, ours = _timed(lambda reader=reader: our_render(reader, fmt, zipped))
        cold.append(ms)
        library_and_check(ours)
        for _ in range(3):
            changer.change()
            ms, ours = _timed(lambda reader=reader: our_render(reader, fmt, zipped))
            warm.append(ms)
        library_and_check(ours)
        reader.close()
    body = library_render(path, fmt, False)
    return {
        "lines": body.count(b"\n"),
        "cold": statistics.median(cold),
        "warm": statistics.median(warm),
        "library": statistics.median(library),
    }


MEMORY = """
import ctypes, gc, os, sys, tracemalloc
sys.path.insert(0, {root!r})
path, mode, measure = sys.argv[1], sys.argv[2], sys.argv[3]
from benchmarks.scrape import library_render, our_render
from tamma_metrics.scrape import folder
from tamma_metrics.scrape.encoder import OPENMETRICS, TEXT

def resident():
    # What stays resident: freed memory handed back to the system first (glibc keeps
    # what a scrape freed otherwise, which is not what the index holds).
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("RssAnon")) * 1024

library_render(path, TEXT, False)  # imports and one-off allocations, in both modes
before = resident()
if measure == "heap":
    tracemalloc.start()  # its own bookkeeping would count in RSS: measured apart
if mode.startswith("ours"):
    reader = folder.FolderReader(path)
    for fmt in (TEXT, OPENMETRICS) if mode == "ours-both" else (TEXT,):
        our_render(reader, fmt, False)
        our_render(reader, fmt, False)
else:
    library_render(path, TEXT, False)
if measure == "heap":
    gc.collect()
    print(tracemalloc.get_traced_memory()[0])
else:
    print(resident() - before)
"""


def memory(path: Path) -> dict[str, tuple[int, int]]:
    code = MEMORY.format(root=str(ROOT))
    found = {}
    for mode in ("library", "ours", "ours-both"):
        rss, held = (
            int(
                subprocess.run(
                    [PYTHON, "-c", code, str(path), mode, measure],
                    capture_output=True, text=True, check=True,
                ).stdout
            )
            for measure in ("rss", "heap")
        )  # fmt: skip
        found[mode] = (rss, held)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the demo folder only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tamma-bench-scrape-"))
    try:
        demo = demo_folder(work)
        folders = {"demo (make run, 1,000 issues)": demo}
        if not args.quick:
            folders["50,032 series (every family at 390 label sets)"] = capped_folder(work, 390)
            folders["every family at its series cap"] = capped_folder(work)
            for recycles in (100, 1000):
                folders[f"demo after {recycles:,} worker recycles"] = recycled_folder(
                    demo, work, recycles
                )
        report(folders, args.runs)
        report_memory({k: v for k, v in folders.items() if "recycles" not in k})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(folders: dict[str, Path], runs: int) -> None:
    print(f"### In-process render, ours vs prometheus_client (medians: {runs} cold, {3 * runs}")
    print(f"warm and {2 * runs} library scrapes; gzip: ours level {GZIP_LEVEL}, the library's 9)\n")
    print("| folder | format | lines | library ms | ours cold ms | cold ratio "
          "| ours warm ms | warm ratio |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    warm_by_folder = {}
    for label, path in folders.items():
        for fmt, fmt_label in ((TEXT, "text"), (OPENMETRICS, "OpenMetrics")):
            for zipped in (False, True):
                r = compare(path, fmt, zipped, runs)
                name = fmt_label + (" + gzip" if zipped else "")
                if fmt is TEXT and not zipped:
                    warm_by_folder[label] = (r["warm"], r["cold"])
                print(
                    f"| {label} | {name} | {r['lines']:,} | {r['library']:.1f} | "
                    f"{r['cold']:.1f} | {r['cold'] / r['library']:.3f}x | "
                    f"{r['warm']:.2f} | {r['warm'] / r['library']:.4f}x |"
                )
    base = next((v for k, v in warm_by_folder.items() if k.startswith("demo (")), None)
    recycled = {k: v for k, v in warm_by_folder.items() if "recycles" in k}
    if base and recycled:
        print("\nUnder recycling (text, ours; ratio to the demo folder before any recycle):\n")
        for label, (warm, cold) in recycled.items():
            print(f"- {label}: warm {warm / base[0]:.2f}x, cold {cold / base[1]:.2f}x")
    gzip_sizes(folders)


def gzip_sizes(folders: dict[str, Path]) -> None:
    path = next(iter(folders.values()))
    body = library_render(path, TEXT, False)
    print(f"\n### gzip levels on the demo's exposition ({len(body):,} bytes)\n")
    print("| level | ms (median of 9) | bytes | ratio to level 9 size |")
    print("|---:|---:|---:|---:|")
    nine = len(gzip.compress(body, 9))
    for level in (1, 3, 6, 9):
        times = []
        for _ in range(9):
            start = time.perf_counter()
            size = len(gzip.compress(body, compresslevel=level, mtime=0))
            times.append((time.perf_counter() - start) * 1000)
        print(f"| {level} | {statistics.median(times):.1f} | {size:,} | {size / nine:.2f} |")


def report_memory(folders: dict[str, Path]) -> None:
    print("\n### Memory after scraping (a fresh process for each figure)\n")
    print("What stays after the scrapes, over the process before them: resident memory once")
    print("the allocator has handed back what was freed (malloc_trim), and the Python heap")
    print("still held (tracemalloc, in a process of its own): what the index keeps, against")
    print("prometheus_client, which keeps nothing.\n")
    print("| folder | reader | RSS held MB | heap held MB |")
    print("|---|---|---:|---:|")
    labels = {
        "library": "prometheus_client",
        "ours": "ours (index kept, text served)",
        "ours-both": "ours (index kept, text and OpenMetrics served)",
    }
    for name, path in folders.items():
        found = memory(path)
        for mode, label in labels.items():
            rss, held = found[mode]
            print(f"| {name} | {label} | {rss / 2**20:.1f} | {held / 2**20:.1f} |")


if __name__ == "__main__":
    main()

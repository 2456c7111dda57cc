"""`make run` and `make serve` refuse to start, before touching anything, when their port
is taken or another instance of the same checkout runs (scripts/preflight.sh)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PREFLIGHT = ROOT / "scripts" / "preflight.sh"


def preflight(*args: str, run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUN_DIR": str(run_dir), "MAKE_TARGET": "serve"}
    return subprocess.run(
        [str(PREFLIGHT), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_a_free_port_passes(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = preflight("127.0.0.1", str(port), run_dir=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("which", ["port", "metrics port"])
def test_a_taken_port_is_refused_with_what_to_do(tmp_path, which):
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free.bind(("127.0.0.1", 0))
        busy, other = taken.getsockname()[1], free.getsockname()[1]
        ports = [str(busy), str(other)] if which == "port" else [str(other), str(busy)]
        free.close()
        done = preflight("127.0.0.1", *ports, run_dir=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"Port {busy} on 127.0.0.1 is in use: stop what listens there, or pick another port,\n"
        f"e.g. make serve PORT={busy + 1}.\n"
    )


def test_another_instance_of_the_checkout_is_refused(tmp_path):
    server = subprocess.Popen(["sleep", "60"], cwd=ROOT)  # stands in for runserver
    try:
        (tmp_path / "instance.pid").write_text(f"{server.pid} make run on 127.0.0.1:8000\n")
        done = preflight("127.0.0.1", "0", run_dir=tmp_path)
    finally:
        server.kill()
        server.wait()
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"Another instance of this checkout is running: make run on 127.0.0.1:8000 "
        f"(pid {server.pid}).\nStop it first (Ctrl-C in its terminal, or: kill {server.pid})"
    )
    # Gone, or a pid now used by a process elsewhere: not an instance of this checkout.
    assert preflight("127.0.0.1", "0", run_dir=tmp_path).returncode == 0
    elsewhere = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    try:
        (tmp_path / "instance.pid").write_text(f"{elsewhere.pid} make run on 127.0.0.1:8000\n")
        assert preflight("127.0.0.1", "0", run_dir=tmp_path).returncode == 0
    finally:
        elsewhere.kill()
        elsewhere.wait()


@pytest.mark.parametrize("target", ["run", "serve"])
def test_run_and_serve_check_before_anything_else(target):
    """The preflight is the recipe's first line: nothing is emptied, reset or revoked
    before it passes; the server's pid is written right before it starts."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(rf"^{target}: venv\n((?:\t.*\n)+)", makefile, re.M).group(1).splitlines()
    assert recipe[0].startswith(f"\tMAKE_TARGET={target} scripts/preflight.sh $(HOST) $(PORT)")
    # The shell that writes its pid ($$) becomes the server (exec); in between, `make run`
    # only starts the demo's heartbeats in the background.
    between = ["\t{ $(BIN)/python manage.py demo_heartbeats --target $(HOST):$(PORT) & } && \\"]
    pid = -3 if target == "run" else -2
    assert recipe[pid].startswith('\techo "$$$$ make ') and "instance.pid" in recipe[pid]
    assert recipe[pid + 1 : -1] == (between if target == "run" else [])
    assert recipe[-1].lstrip().startswith("exec ")

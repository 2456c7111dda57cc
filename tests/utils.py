"""Test helpers: scrape /metrics and parse it with prometheus_client's parsers."""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families


class Samples(dict):
    """{(sample name, frozenset of label items): value} with lookups by labels."""

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when absent (counters start at 0)."""
        return self.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, items), v in self.items() if n == name and wanted <= items)

    def series(self, name: str) -> dict[frozenset, float]:
        return {items: v for (n, items), v in self.items() if n == name}

    def names(self) -> set[str]:
        return {n for n, _ in self}


def parse(text: str, *, openmetrics: bool = False) -> Samples:
    """Parse exposition text; raises on malformed input or a duplicate series."""
    samples = Samples()
    parser = openmetrics_families if openmetrics else text_string_to_metric_families
    for family in parser(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


_NAME = re.compile(r"^(# (?:HELP|TYPE|UNIT) )?([^\s{]+)", re.M)


def unescape_names(text: str, escaping: str) -> str:
    """``text`` with its metric names unescaped as Prometheus reads them for the escaping
    scheme the response declared (``model.UnescapeName`` in prometheus/common).

    prometheus_client's OpenMetrics encoder escapes a sample's whole name under ``dots``
    and ``values`` (``a__b__bucket`` in family ``a__b``, ``U__a__b__bucket`` in family
    ``a_b``), which its own parser, knowing no escaping, takes for other families; the
    names match once unescaped."""
    if escaping == "dots":
        return _NAME.sub(
            lambda m: (m[1] or "") + m[2].replace("_dot_", ".").replace("__", "_"), text
        )
    if escaping == "values":
        return _NAME.sub(lambda m: (m[1] or "") + _unescape_value(m[2]), text)
    return text


def _unescape_value(name: str) -> str:
    if not name.startswith("U__"):
        return name
    decoded = re.sub(r"__|_([0-9a-fA-F]{1,6})_", lambda m: chr(int(m[1], 16)) if m[1] else "_",
                     name[3:])  # fmt: skip
    return decoded


def scrape(client, *, names: Iterable[str] = (), **headers: str) -> Samples:
    """GET /metrics through the Django test client and parse the answer."""
    response = client.get("/metrics", {"name[]": list(names)} if names else {}, **headers)
    assert response.status_code == 200, response.content[:500]
    body = response.content
    if response.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    openmetrics = response["Content-Type"].startswith("application/openmetrics-text")
    return parse(body.decode("utf-8"), openmetrics=openmetrics)


def delta(after: Samples, before: Samples) -> Samples:
    """Per-series difference, dropping series that did not change."""
    keys = set(after) | set(before)
    diff = Samples({k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys})
    return Samples({k: v for k, v in diff.items() if v})


def basic(username: str, password: str) -> str:
    """An HTTP basic Authorization header value."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def client_of(role: str, username: str):
    """A Django test client with a bearer token of a new user in ``role`` (the preset
    roles are seeded first)."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from tamma_metrics.models import ApiToken
    from tamma_metrics.roles import seed_roles

    seed_roles()
    user = User.objects.create_user(username)
    user.groups.add(Group.objects.get(name=role))
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.create_for(user, 'test')[1]}")


def staff_client(username: str, role: str | None):
    """A Django test client logged in as a new staff user in ``role`` (seeded before)."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user = User.objects.create_user(username, password="x", is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def process_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment of another process on the demo site's settings, this run's
    database (``process_database_url``) and a multiprocess folder of its own."""
    folder = tmp_path / "multiproc"
    folder.mkdir()
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "s" * 50,
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "METRICS_AUTH_ENABLED": "false",
    }


ROOT = Path(__file__).resolve().parent.parent


def run_python(
    *args: str, env: Mapping[str, str], returncode: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in another process from the repository root with ``env`` (the
    whole environment); fail with its stderr unless it exits with ``returncode``."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=dict(env),
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == returncode, done.stderr
    return done


def run_on_sqlite_file(code: str, tmp_path: Path, **env: str) -> str:
    """Run ``python -c code`` in another process on the test settings with its own SQLite
    file (passed as argv[1]) and multiprocess folder; its standard output."""
    database = tmp_path / "db.sqlite3"
    folder = tmp_path / "multiproc"
    folder.mkdir()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        **env,
    }
    return run_python("-c", code, str(database), env=environment).stdout


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``) mounted on ``path`` for the block, unmounted
    after; the test is skipped where mounting is not allowed (not root, a container
    without CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)]
    try:
        done = subprocess.run(mount, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("no mount command: a small tmpfs is how this test fills a disk")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=60).returncode:
            # Still busy (a process the test started keeps a file open): detach it.
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)


def fill(folder: Path, name: str = "filler") -> Path:
    """Write zeros to ``folder/name`` until the filesystem says ENOSPC; the file."""
    filler = folder / name
    with open(filler, "ab", buffering=0) as out:
        for size in (1 << 20, 4096, 1):  # the last pages of the filesystem too
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler

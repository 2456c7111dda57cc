"""Real servers for end-to-end tests: a demo site on a SQLite file, gunicorn, Prometheus.

Every server binds 127.0.0.1 on a free port, is waited for by polling (never a fixed
sleep) and stopped by its PID. The fixtures in ``conftest.py`` wrap these; use the
classes directly when a test needs a server configured differently.

    site = Site.create(tmp_path)                  # migrated, roles seeded
    token = site.token("prom", "prometheus")      # manage.py create_api_token
    with Gunicorn(site, workers=3) as server:
        with Prometheus(tmp_path / "prom", [ScrapeJob("tamma", server.address, token)]) as prom:
            prom.wait_for('sum(up{job="tamma"})', 1)
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.servers import Response, children_of, free_port, http_get, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
TEXT_0_0_4 = "text/plain;version=0.0.4"

T = TypeVar("T")


@dataclass
class Site:
    """The demo project on its own SQLite file and multiprocess folder.

    ``env`` is what every process of this site runs with: manage.py commands and
    gunicorn share the database and the folder, so their events meet in one scrape.
    """

    root: Path
    database: Path
    multiproc_dir: Path
    env: dict[str, str]
    command_pids: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, *, seed_roles: bool = True, **env: str) -> Site:
        root.mkdir(parents=True, exist_ok=True)
        database, folder = root / "db.sqlite3", root / "prometheus-multiproc"
        folder.mkdir(exist_ok=True)
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PROMETHEUS_MULTIPROC", "prometheus_multiproc", "METRICS_"))
        }
        environment.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            DATABASE_URL=f"sqlite:///{database}",
            PROMETHEUS_MULTIPROC_DIR=str(folder),
            SECRET_KEY=secrets.token_urlsafe(40),  # random per run, never written down
            DEBUG="false",
            PYTHONUNBUFFERED="1",
        )
        environment.update(env)  # DATABASE_URL too: a benchmark may run it on PostgreSQL
        site = cls(root, database, folder, environment)
        site.manage("migrate", "--noinput", "-v0")
        if seed_roles:
            site.manage("seed_roles")
        return site

    def manage(self, *args: str, timeout: float = 180) -> str:
        """Run ``manage.py`` with this site's environment; fail with its stderr."""
        process = subprocess.Popen(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.command_pids.append(process.pid)  # its metric files stay in the folder
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        assert process.returncode == 0, f"manage.py {' '.join(args)} failed:\n{err}"
        return out

    def shell(self, code: str) -> str:
        return self.manage("shell", "-v", "0", "-c", code)

    def token(self, user: str, role: str | None = None) -> str:
        """A new bearer token for ``user`` (created in ``role`` when missing)."""
        args = ["create_api_token", "--user", user, "--name", f"e2e-{secrets.token_hex(3)}"]
        if role:
            args += ["--create-user", role]
        return self.manage(*args).strip()

    def tokens(self, prefix: str, role: str, count: int) -> list[str]:
        """``count`` users ``{prefix}-N`` in ``role``, a bearer token each (one command)."""
        created = self.shell(
            "from django.contrib.auth.models import Group, User\n"
            "from tamma_metrics.models import ApiToken\n"
            f"for n in range({count}):\n"
            f"    user = User.objects.create_user(f'{prefix}-{{n}}')\n"
            f"    user.groups.add(Group.objects.get(name={role!r}))\n"
            "    print(ApiToken.create_for(user, 'e2e')[1])\n"
        )
        return created.split()

    def sql(self, query: str, *params: Any) -> Any:
        """The first column of the first row, read from the database directly (the SQLite
        file read-only, or the site's PostgreSQL; ``?`` placeholders either way)."""
        url = self.env["DATABASE_URL"]
        if url.startswith("postgres"):
            import psycopg

            with psycopg.connect(url, autocommit=True) as db:
                return db.execute(query.replace("?", "%s"), params).fetchone()[0]
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(query, params).fetchone()[0]

    def metric_files(self) -> list[str]:
        return sorted(name for name in os.listdir(self.multiproc_dir) if name.endswith(".db"))


class Gunicorn:
    """``gunicorn -c project/gunicorn.conf.py`` for a Site; a context manager."""

    def __init__(
        self,
        site: Site,
        *,
        workers: int = 3,
        metrics_port: bool = False,
        max_requests: int = 0,
        max_requests_jitter: int = 0,
        extra_args: Sequence[str] = (),
        log: Path | None = None,
        access_log: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.site, self.workers = site, workers
        self.port = free_port()
        self.metrics_port = free_port() if metrics_port else None
        self.log = log or site.root / f"gunicorn-{self.port}.log"
        self.env = {
            **site.env,
            "WEB_CONCURRENCY": str(workers),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "MAX_REQUESTS": str(max_requests),
            "MAX_REQUESTS_JITTER": str(max_requests_jitter),
            **(env or {}),
        }
        if self.metrics_port:
            self.env["METRICS_PORT"] = str(self.metrics_port)
        self.extra_args = list(extra_args)
        self.access_log: Path | None = None
        if access_log:
            # %(p)s: the pid of the worker that answered (see answered_by()).
            self.access_log = site.root / f"access-{self.port}.log"
            self.extra_args += [
                "--access-logfile",
                str(self.access_log),
                "--access-logformat",
                "%(p)s %(U)s",
            ]
        self.process: subprocess.Popen | None = None

    def answered_by(self, path: str) -> collections.Counter:
        """Requests for ``path`` per worker pid, from the access log."""
        assert self.access_log, "started without access_log=True"
        lines = self.access_log.read_text().splitlines()
        return collections.Counter(line.split()[0] for line in lines if line.split()[1] == path)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_address(self) -> str:
        assert self.metrics_port, "started without metrics_port=True"
        return f"127.0.0.1:{self.metrics_port}"

    def url(self, path: str, *, metrics_port: bool = False) -> str:
        return f"http://{self.metrics_address if metrics_port else self.address}{path}"

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> Response:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return http_get(self.url(path, **kwargs), headers)

    def post_json(self, path: str, token: str, payload: Any, timeout: float = 60) -> Response:
        """POST ``payload`` as JSON with a bearer token; OSError when the connection fails."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return http_get(self.url(path), headers, timeout, data=json.dumps(payload).encode())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return children_of(self.pid)

    def start(self) -> Gunicorn:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [GUNICORN, "-c", "project/gunicorn.conf.py", *self.extra_args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Every worker booted and the site answering on every bound port."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited {self.process.returncode}: {self.tail()}")
            if len(self.worker_pids()) != self.workers:
                return False
            try:
                # /metrics without credentials: 401, and no health request is counted.
                ports = [False, True] if self.metrics_port else [False]
                return all(self.get("/metrics", metrics_port=p).status == 401 for p in ports)
            except OSError:
                return False

        wait_until(ready, timeout=timeout, what=f"gunicorn on {self.address}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None:
            return
        workers = self.worker_pids()
        stop(self.process)
        for pid in workers:  # normally gone with the master; never leave one behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ScrapeJob:
    name: str
    target: str  # host:port
    token: str | None = None
    metrics_path: str = "/metrics"


class PromQL:
    """Instant queries of the Prometheus HTTP API (Prometheus, VictoriaMetrics) at ``url``."""

    url: str

    def query(self, expr: str) -> list[dict]:
        """Instant query: the API's ``result`` list (``metric`` labels and ``value``)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        payload = json.loads(http_get(url).body)
        assert payload.get("status") == "success", payload
        return payload["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query; None when it has no result."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} gave {len(result)} series: {result}"
        return float(result[0]["value"][1])


class Prometheus(PromQL):
    """Prometheus (Debian's 2.42) scraping the given jobs every ``interval``."""

    def __init__(
        self,
        root: Path,
        jobs: Iterable[ScrapeJob],
        *,
        interval: str = "1s",
        config: dict[str, Any] | None = None,
    ) -> None:
        """``config``: more of prometheus.yml (global's external_labels, rule_files,
        alerting, remote_write), merged over what the jobs give."""
        self.root, self.jobs, self.interval = root, list(jobs), interval
        self.extra = config or {}
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        scrape_configs = []
        for job in self.jobs:
            config: dict[str, Any] = {
                "job_name": job.name,
                "metrics_path": job.metrics_path,
                "static_configs": [{"targets": [job.target]}],
            }
            if job.token:
                token_file = self.root / f"{job.name}.token"
                token_file.write_text(job.token + "\n")
                token_file.chmod(0o600)
                config["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
            scrape_configs.append(config)
        config_file = self.root / "prometheus.yml"
        extra = dict(self.extra)
        config = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
                **extra.pop("global", {}),
            },
            "scrape_configs": scrape_configs,
            **extra,
        }
        config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return config_file

    def start(self) -> Prometheus:
        config = self.write_config()
        self.log = self.root / "prometheus.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._ready, timeout=60, what="Prometheus /-/ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text(errors='replace')}")
        try:
            return http_get(f"{self.url}/-/ready", timeout=5).status == 200
        except OSError:
            return False

    def wait_for(self, expr: str, expected: float, timeout: float = 60) -> float:
        """Poll ``expr`` until it equals ``expected`` exactly; return it. A timeout says
        how each target's last scrape went (a scrape that timed out keeps old values)."""
        try:
            return wait_until(
                lambda: self.value(expr),
                lambda value: value == expected,
                timeout=timeout,
                what=f"{expr} == {expected}",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}; targets: {self.targets()}") from None

    def targets(self) -> list[dict]:
        """Each active target's job, health, last error and last scrape's duration."""
        answer = json.loads(http_get(f"{self.url}/api/v1/targets").body)
        return [
            {
                name: target.get(name)
                for name in ("scrapePool", "health", "lastError", "lastScrapeDuration")
            }
            for target in answer["data"]["activeTargets"]
        ]

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Script:
    """A throw-away server of scripts/pg.sh or scripts/redis.sh: started in its own folder
    on a free port of 127.0.0.1, stopped (and its files left to the test's tmp) after."""

    def __init__(self, script: str, root: Path) -> None:
        self.script, self.root = ROOT / "scripts" / script, root
        self.url = ""

    def __enter__(self) -> Script:
        done = subprocess.run(
            [str(self.script), "start", str(self.root)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        self.url = done.stdout.strip().splitlines()[-1]
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([str(self.script), "stop", str(self.root)], timeout=60, check=False)


@contextlib.contextmanager
def postgres() -> Iterator[Script]:
    """A private PostgreSQL cluster; ``.url`` is its DATABASE_URL (database "tamma").
    Its folder is under /tmp, where the postgres user can reach it (pytest's are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="tamma-pg.", dir="/tmp"))
    root.chmod(0o711)  # the postgres user only passes through
    try:
        with Script("pg.sh", root / "cluster") as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def redis(root: Path) -> Script:
    """A private Redis; ``.url`` is its CACHE_URL."""
    return Script("redis.sh", root)


class _Binary:
    """A server binary started with arguments, up when its readiness URL answers 200."""

    binary = ""
    ready_path = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self.log = self.root / "server.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(), cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.binary} exited: {self.log.read_text()[-2000:]}")
            return http_get(f"{self.url}{self.ready_path}", timeout=5).status == 200

        try:
            wait_until(ready, timeout=60, what=f"{self.binary} ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop(self.process)

    def get_json(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = http_get(f"{self.url}{path}{query}")
        assert answer.status == 200, answer.text
        return json.loads(answer.body)


class VictoriaMetrics(_Binary, PromQL):
    """Debian's victoria-metrics: a long-term store that takes Prometheus's remote write.
    Samples of identical series closer than ``dedup`` are one (an HA pair's copies)."""

    binary = "/usr/bin/victoria-metrics"
    ready_path = "/health"

    def __init__(self, root: Path, *, dedup: str = "1s") -> None:
        super().__init__(root)
        self.dedup = dedup

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.root / 'data'}",
            f"-dedup.minScrapeInterval={self.dedup}",
            "-search.latencyOffset=0s",  # the newest samples are what the test compares
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v1/write"


class Alertmanager(_Binary):
    """Debian's prometheus-alertmanager with ``config`` (a dict), not clustered."""

    binary = "/usr/bin/prometheus-alertmanager"
    ready_path = "/-/ready"

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        super().__init__(root)
        self.config = root / "alertmanager.yml"
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # one instance: no gossip port
            "--log.level=warn",
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alerts(self, **labels: str) -> list[dict]:
        """The alerts it holds whose labels include ``labels``."""
        return [
            alert
            for alert in self.get_json("/api/v2/alerts")
            if labels.items() <= alert["labels"].items()
        ]

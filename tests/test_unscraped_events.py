"""A process whose events no scrape reads says so once, on its first event: a
management command or shell without the multiprocess folder, or one of several
processes serving the site without it (docs/usage.md, "Several processes")."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from tamma_metrics import instruments, record
from tests.utils import run_python

OWN_REGISTRY = "this process's own registry (PROMETHEUS_MULTIPROC_DIR is not set)"


def _command_message(command: str, where: str = OWN_REGISTRY, pid: int | None = None) -> str:
    return (
        f"tamma_metrics: events recorded by this process (manage.py {command}, pid "
        f"{os.getpid() if pid is None else pid}) go to {where}; no scrape of the site reads "
        'them, and unless it pushes them (call_command("push_metrics", ...)) they are lost '
        "when it exits. Run it with the site's PROMETHEUS_MULTIPROC_DIR to have them scraped."
    )


def _processes_message(processes: int, said_by: str) -> str:
    return (
        f"tamma_metrics: the site runs {processes} processes ({said_by}={processes}) and "
        f"events recorded by this process (pid {os.getpid()}) go to {OWN_REGISTRY}; a "
        "scrape shows only the events of the process that answers it. Set "
        "PROMETHEUS_MULTIPROC_DIR to a folder its processes share (docs/serving.md)."
    )


@pytest.fixture
def without_folder(monkeypatch):
    """As if PROMETHEUS_MULTIPROC_DIR were unset (prometheus_client keeps its storage)
    and this process had told nothing yet; ``folder(value)`` sets another value."""
    setting: list[str | None] = [None]
    monkeypatch.setattr(instruments, "_folder_setting", lambda: setting[0])
    monkeypatch.setattr(instruments, "_unscraped_told", False)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    return lambda value: setting.__setitem__(0, value)


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tamma_metrics" and r.levelno == logging.WARNING
    ]


def _record_some_events() -> None:
    record.code_change(change_type="create", language="go", actor="system", file_type="go")
    record.code_change(change_type="update", language="rust", actor="user", file_type="rs")
    record.escalation(escalation_type="blocked", severity="low", component="git", reason="x")


@pytest.mark.django_db
def test_a_shell_without_the_folder_warns_once_on_its_first_event(
    without_folder, monkeypatch, caplog
):
    monkeypatch.setattr(sys, "argv", ["manage.py", "shell"])
    caplog.set_level(logging.WARNING, logger="tamma_metrics")
    instruments.get_all()  # building the instruments records nothing: no warning
    assert _warnings(caplog) == []
    _record_some_events()
    _record_some_events()
    assert _warnings(caplog) == [_command_message("shell")]


@pytest.mark.django_db
def test_one_of_several_processes_without_the_folder_warns_once(
    without_folder, monkeypatch, caplog, settings
):
    monkeypatch.setattr(sys, "argv", ["gunicorn", "project.wsgi"])
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    caplog.set_level(logging.WARNING, logger="tamma_metrics")
    _record_some_events()
    _record_some_events()
    assert _warnings(caplog) == [_processes_message(3, "WEB_CONCURRENCY")]
    settings.TAMMA_METRICS = {"WORKER_PROCESSES": 2}
    assert instruments.unscraped() == _processes_message(2, "WORKER_PROCESSES")


@pytest.mark.django_db
def test_processes_whose_events_a_scrape_reads_say_nothing(without_folder, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tamma_metrics")
    cases = [
        # One process serves the site: its scrapes read its own registry.
        (["gunicorn", "project.wsgi"], None, None),
        (["gunicorn", "project.wsgi"], "1", None),
        (["manage.py", "runserver"], "3", None),
        (["manage.py", "testserver"], None, None),
        # push_metrics pushes its own registry.
        (["manage.py", "push_metrics"], None, None),
        # The folder every scrape merges.
        (["manage.py", "shell"], "3", "/srv/multiproc"),
        (["gunicorn", "project.wsgi"], "3", "/srv/multiproc"),
    ]
    for argv, workers, folder in cases:
        monkeypatch.setattr(sys, "argv", argv)
        if workers is None:
            monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
        else:
            monkeypatch.setenv("WEB_CONCURRENCY", workers)
        without_folder(folder)
        assert instruments.unscraped() is None, (argv, workers, folder)
    _record_some_events()
    assert _warnings(caplog) == []


def test_the_warning_says_where_the_events_went(without_folder, monkeypatch, settings):
    monkeypatch.setattr(sys, "argv", [os.path.join("venv", "django", "__main__.py"), "seed"])
    assert instruments.unscraped() == _command_message("seed")
    without_folder("")  # prometheus_client writes files named after pids to the cwd
    cwd = (
        f"files in the current directory ({os.getcwd()}): PROMETHEUS_MULTIPROC_DIR is set but empty"
    )
    assert instruments.unscraped() == _command_message("seed", cwd)
    without_folder(None)
    settings.TAMMA_METRICS = {"BACKENDS": {"statsd": {}, "otel": {}}}
    assert instruments.unscraped() == (
        _command_message("seed") + " They are also sent to the push backends: otel, statsd."
    )


def test_the_command_is_read_from_argv():
    cases = {
        ("manage.py", "shell", "-c", "x"): "shell",
        ("/srv/app/manage.py", "seed_demo"): "seed_demo",
        ("/venv/bin/django-admin", "migrate"): "migrate",
        (os.path.join("lib", "django", "__main__.py"), "shell"): "shell",
        ("manage.py",): None,
        ("manage.py", "--help"): None,
        ("/venv/bin/gunicorn", "project.wsgi"): None,
        ("/venv/bin/pytest", "tests"): None,
        ("-c", "shell"): None,
    }
    for argv, command in cases.items():
        assert instruments.management_command(list(argv)) == command, argv


SHELL = """
import os
from django.core.management import call_command
from prometheus_client import REGISTRY
from tamma_metrics import record

call_command("migrate", verbosity=0)
for file_type in ("go", "py"):
    record.code_change(change_type="create", language="go", actor="system", file_type=file_type)
labels = {"change_type": "create", "language": "go", "actor": "system", "file_type": "py"}
print(os.getpid(), REGISTRY.get_sample_value("tamma_code_changes_total", labels))
"""


@pytest.mark.slow
def test_manage_py_shell_without_the_folder_logs_the_one_warning():
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY", "CACHE_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        TAMMA_TEST_SINGLE_PROCESS="1",  # the test settings set no folder then
        DATABASE_URL="sqlite:///:memory:",
    )
    done = run_python("manage.py", "shell", "-c", SHELL, env=env)
    pid, value = done.stdout.splitlines()[-1].split()  # after "N objects imported ..."
    assert value == "1.0"  # recorded, in the shell's own registry
    assert done.stderr.splitlines() == [_command_message("shell", pid=int(pid))]

"""The installed prometheus_client merges multiprocess files as the reader mirrors; if
another version did not, scrapes would fall back to its own collector, loudly."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict

from tamma_metrics import checks, conf, record
from tamma_metrics.scrape import conformance
from tests.utils import scrape

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_prometheus_client_is_the_tested_release_and_agrees():
    assert conformance.installed_release() == conformance.TESTED_RELEASE
    assert conformance.differences() is None
    assert conformance.verified()
    # The package's pin names the same release.
    major, minor = conformance.TESTED_RELEASE
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"prometheus-client>={major}.{minor},<{major}.{minor + 1}" in dependencies
    assert checks.check_prometheus_client() == []


@pytest.fixture
def library_merges_differently(monkeypatch):
    """A prometheus_client whose reading of the files differs from the one the reader
    mirrors (here: every value doubled), as a future release's might."""
    read = MmapedDict.read_all_values_from_file

    def doubled(filename: str):
        return [(key, value * 2, ts, pos) for key, value, ts, pos in read(filename)]

    monkeypatch.setattr(MmapedDict, "read_all_values_from_file", staticmethod(doubled))
    conf.reset()  # forget this process's earlier verdict
    yield
    monkeypatch.undo()
    conf.reset()


@pytest.mark.django_db
def test_a_release_that_merges_differently_fails_the_check_and_the_scrape_falls_back(
    client, library_merges_differently, caplog
):
    problem = conformance.differences()
    assert problem is not None and "merges the multiprocess files differently" in problem
    assert [error.id for error in checks.check_prometheus_client()] == ["tamma_metrics.E016"]

    labels = {"change_type": "create", "language": "probe", "actor": "system", "file_type": "pb"}
    record.code_change(**labels)
    with caplog.at_level(logging.ERROR, logger="tamma_metrics.scrape.conformance"):
        samples = scrape(client)
    # Served by prometheus_client's collector (which here doubles): not by the reader.
    assert samples.value("tamma_code_changes_total", **labels) == 2.0
    assert "MultiProcessCollector instead" in caplog.text
    assert not conformance.verified()

"""Self-metric counters exist at 0 from a process's start for their known label values,
so an alert on them needs no ``or vector(0)`` and ``increase()`` sees the first event."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tamma_metrics import backends, catalogue, instruments
from tests.utils import run_on_sqlite_file

BUILD = """
import django
django.setup()
from tamma_metrics import instruments
instruments.get_all()
"""


def _label_sets(samples: dict, name: str) -> set[tuple[str, ...]]:
    return {values for (sample, values) in samples if sample == name}


def test_a_new_process_starts_the_self_metric_counters_at_zero(tmp_path):
    run_on_sqlite_file(BUILD, tmp_path)  # builds the instruments, records nothing
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path / "multiproc"))
    order = {f.full_name: f.labels for f in catalogue.families()}
    samples = {
        (s.name, tuple(s.labels[label] for label in order[s.name])): s.value
        for metric in registry.collect()
        for s in metric.samples
    }
    assert set(samples.values()) == {0.0}
    expected = {
        (catalogue.get(name).full_name, values) for name, values in instruments.zero_series()
    }
    assert set(samples) == expected
    assert _label_sets(samples, "tamma_metrics_errors_total") == {
        ("disk",),
        ("receiver",),
        ("record",),
        ("rejected",),
    }
    assert _label_sets(samples, "tamma_metrics_webhook_deliveries_total") == {
        (platform, outcome)
        for platform in ("github", "gitlab")
        for outcome in (
            "applied",
            "unchanged",
            "stale",
            "conflict",
            "duplicate",
            "ignored",
            "rejected",
        )
    }
    # Every family recorded through the label policy: the events and the connections.
    events = [f for f in catalogue.families() if f.stored and f.source is not catalogue.Source.SELF]
    assert {f.source for f in events} == {catalogue.Source.EVENT, catalogue.Source.PROCESS}
    assert _label_sets(samples, "tamma_metrics_label_overflow_total") == {(f.name,) for f in events}
    assert _label_sets(samples, "tamma_metrics_label_folds_total") == {
        (f.name, label) for f in events for label in f.labels
    }
    # Only free-form labels are checked for personal data, so only they start at 0.
    redactions = _label_sets(samples, "tamma_metrics_label_redactions_total")
    assert {("escalations_total", "reason"), ("escalations_total", "component")} <= redactions
    assert ("deployments_total", "environment") in redactions  # capped, not closed
    assert ("escalations_total", "severity") not in redactions
    assert ("active_connections", "provider") in redactions  # a cap overrides "provider"
    assert ("ai_requests_total", "provider") not in redactions
    # Nothing else: building records no event.
    assert len(samples) == len(expected)


class _Sink(backends.Backend):
    name = "sink"

    def send(self, samples: Sequence[backends.Sample]) -> None:
        pass


@pytest.mark.django_db
def test_a_dispatcher_starts_its_backend_errors_at_zero(metrics):
    dispatcher = backends.Dispatcher([_Sink()], 10)
    try:
        samples = metrics()
    finally:
        dispatcher.flush()
    for backend in ("queue", "sink"):
        key = ("tamma_metrics_backend_errors_total", frozenset({("backend", backend)}))
        assert key in samples, backend

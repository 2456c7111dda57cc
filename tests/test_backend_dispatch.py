"""The push-backend interface: events reach backends off the caller's thread, failures counted."""

from __future__ import annotations

import threading

import pytest

from tamma_metrics import backends, record
from tests.utils import delta

pytestmark = pytest.mark.django_db

received: list[backends.Sample] = []
gate = threading.Event()


class RecordingBackend(backends.Backend):
    name = "recording"

    def send(self, samples):
        received.extend(samples)


class BrokenBackend(backends.Backend):
    name = "broken"

    def send(self, samples):
        raise ConnectionRefusedError("nobody listens")


class StuckBackend(backends.Backend):
    name = "stuck"

    def send(self, samples):
        gate.wait(10)


@pytest.fixture
def use_backends(settings, monkeypatch):
    # Only flush() sends: a tick between a test's scrape (its own response-time event)
    # and what it records would make two batches, and count a failing backend twice.
    monkeypatch.setattr(backends, "FLUSH_SECONDS", 3600)

    def configure(config, queue_size=10_000):
        settings.TAMMA_METRICS = {"BACKENDS": config, "BACKEND_QUEUE_SIZE": queue_size}
        backends.reset()

    received.clear()
    yield configure
    gate.set()
    backends.reset()
    gate.clear()


def test_no_backend_means_no_dispatcher(settings):
    backends.reset()
    assert backends.dispatcher() is None


def test_events_reach_the_backend_with_guarded_labels(use_backends):
    use_backends({"tests.test_backend_dispatch.RecordingBackend": {}})
    record.ai_request(
        provider="OpenAI",
        model="gpt-4o",
        request_type="chat",
        outcome="success",
        duration_seconds=2.5,
        tokens={"input": 10},
    )
    backends.dispatcher().flush()
    assert [(s.name, s.operation, s.value, s.labels) for s in received] == [
        (
            "tamma_ai_requests_total",
            "inc",
            1.0,
            {"provider": "openai", "model": "gpt-4o", "request_type": "chat", "outcome": "success"},
        ),
        (
            "tamma_ai_request_duration_seconds",
            "observe",
            2.5,
            {
                "provider": "openai",
                "model": "gpt-4o",
                "request_type": "chat",
                "token_range": "0-1k",
            },
        ),
        (
            "tamma_ai_tokens_total",
            "inc",
            10,
            {"provider": "openai", "model": "gpt-4o", "token_type": "input"},
        ),
    ]
    assert received[1].family.buckets[:3] == (0.1, 0.25, 0.5)


def test_a_failing_backend_is_counted_and_the_caller_unharmed(use_backends, metrics):
    use_backends({"tests.test_backend_dispatch.BrokenBackend": {}})
    before = metrics()
    record.code_change(change_type="create", language="go", actor="system", file_type="go")
    backends.dispatcher().flush()
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_code_changes_total",
            change_type="create",
            language="go",
            actor="system",
            file_type="go",
        )
        == 1
    )
    assert change.value("tamma_metrics_backend_errors_total", backend="broken") == 1


def test_a_stuck_backend_never_blocks_and_drops_are_counted(use_backends, metrics):
    use_backends({"tests.test_backend_dispatch.StuckBackend": {}}, queue_size=5)
    before = metrics()
    for _ in range(50):  # 5 wait in the buffer; the rest are dropped for the backend
        record.code_change(change_type="create", language="go", actor="system", file_type="go")
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_code_changes_total",
            change_type="create",
            language="go",
            actor="system",
            file_type="go",
        )
        == 50
    )
    dropped = change.value("tamma_metrics_backend_errors_total", backend="queue")
    # At most 5 wait, and the thread may have drained one batch into the stuck send;
    # the scrapes' own response-time events share the buffer.
    assert 50 - 5 - 5 - 2 <= dropped <= 50

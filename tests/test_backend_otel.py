"""OpenTelemetry backend: exact data through InMemoryMetricReader, and a real OTLP/HTTP
export received by a local HTTP server and decoded with opentelemetry-proto."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    Sum,
)

from tamma_metrics import backends, catalogue, record
from tamma_metrics.access import sync_metric_families
from tamma_metrics.backends.otel import OtelBackend
from tests.servers import free_port
from tests.test_labels import CUSTOM
from tests.utils import delta

pytestmark = pytest.mark.django_db

CLAUDE = {"provider": "anthropic", "model": "claude-sonnet"}
GPT = {"provider": "openai", "model": "gpt-4o"}
UNIT = {"test_type": "unit", "framework": "pytest", "language": "python", "result": "success"}
WS = {"connection_type": "websocket", "provider": "github"}


@pytest.fixture
def use_otel(settings, monkeypatch):
    # Only flush() sends: a tick between a test's scrape (its own response-time event)
    # and what it records would make two batches, and count a failing backend twice.
    monkeypatch.setattr(backends, "FLUSH_SECONDS", 3600)

    def configure(**options):
        settings.TAMMA_METRICS = {**settings.TAMMA_METRICS, "BACKENDS": {"otel": options}}
        backends.reset()

    yield configure
    backends.reset()


def scenario() -> None:
    """Three AI requests (two in one series), two test runs, two connections, one closed."""
    for duration, tokens, cost in ((0.05, {"input": 600, "output": 100}, 0.25), (2.5, {}, 0.5)):
        record.ai_request(
            **CLAUDE,
            request_type="chat",
            outcome="success",
            duration_seconds=duration,
            tokens=tokens,
            cost_usd=cost,
        )
    record.ai_request(
        **GPT,
        request_type="chat",
        outcome="failure",
        duration_seconds=700,  # past the last bucket (600)
        tokens={"input": 20_000},
    )
    for _ in range(2):
        record.test_execution(**UNIT, duration_seconds=42.0)
    record.connection_opened(**WS)
    record.connection_opened(**WS)
    record.connection_closed(**WS)


def points(metrics_data) -> dict[str, dict[frozenset, object]]:
    """{metric name: {attribute items: data point}}, also checking the metric's kind."""
    found: dict[str, dict[frozenset, object]] = {}
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found[metric.name] = {
                    frozenset(p.attributes.items()): p for p in metric.data.data_points
                }
    return found


def metric_objects(metrics_data) -> Iterator:
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            yield from scope_metrics.metrics


def key(**labels: str) -> frozenset:
    return frozenset(labels.items())


def test_in_memory_reader_gets_exact_sums_histograms_and_gauges(use_otel):
    reader = InMemoryMetricReader()
    use_otel(reader=reader)
    scenario()
    backends.dispatcher().flush()
    data = reader.get_metrics_data()
    found = points(data)
    assert set(found) == {
        "tamma_ai_requests",
        "tamma_ai_request_duration_seconds",
        "tamma_ai_tokens",
        "tamma_ai_cost_usd",
        "tamma_test_execution_duration_seconds",
        "tamma_active_connections",
    }
    kinds = {
        m.name: (type(m.data), getattr(m.data, "is_monotonic", None)) for m in metric_objects(data)
    }
    assert kinds["tamma_ai_requests"] == (Sum, True)
    assert kinds["tamma_active_connections"] == (Sum, False)  # an UpDownCounter
    assert kinds["tamma_ai_request_duration_seconds"] == (Histogram, None)

    requests = {k: p.value for k, p in found["tamma_ai_requests"].items()}
    assert requests == {
        key(**CLAUDE, request_type="chat", outcome="success"): 2,
        key(**GPT, request_type="chat", outcome="failure"): 1,
    }
    tokens = {k: p.value for k, p in found["tamma_ai_tokens"].items()}
    assert tokens == {
        key(**CLAUDE, token_type="input"): 600,
        key(**CLAUDE, token_type="output"): 100,
        key(**GPT, token_type="input"): 20_000,
    }
    assert {k: p.value for k, p in found["tamma_ai_cost_usd"].items()} == {key(**CLAUDE): 0.75}
    assert {k: p.value for k, p in found["tamma_active_connections"].items()} == {key(**WS): 1}

    buckets = catalogue.get("ai_request_duration_seconds").buckets
    latency = found["tamma_ai_request_duration_seconds"]
    claude = latency[key(**CLAUDE, request_type="chat", token_range="0-1k")]
    assert tuple(claude.explicit_bounds) == buckets
    assert (claude.count, claude.sum) == (2, 2.55)
    # 0.05 below 0.1; 2.5 in (2, 5]
    assert tuple(claude.bucket_counts) == (1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    gpt = latency[key(**GPT, request_type="chat", token_range="10k-100k")]
    assert (gpt.count, gpt.sum) == (1, 700)
    assert tuple(gpt.bucket_counts) == (0,) * 13 + (1,)  # the +Inf bucket

    tests = found["tamma_test_execution_duration_seconds"][key(**UNIT)]
    assert tuple(tests.explicit_bounds) == catalogue.get("test_execution_duration_seconds").buckets
    assert (tests.count, tests.sum) == (2, 84.0)
    assert tuple(tests.bucket_counts) == (0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0)  # (30, 60]


def test_descriptions_units_and_resource(use_otel):
    reader = InMemoryMetricReader()
    use_otel(reader=reader)
    record.test_execution(**UNIT, duration_seconds=1)
    record.code_change(change_type="create", language="go", actor="system", file_type="go")
    backends.dispatcher().flush()
    data = reader.get_metrics_data()
    described = {m.name: (m.description, m.unit) for m in metric_objects(data)}
    assert described == {
        "tamma_test_execution_duration_seconds": ("Duration of test runs.", "s"),
        "tamma_code_changes": (catalogue.get("code_changes_total").help, ""),
    }
    resource = data.resource_metrics[0].resource.attributes
    assert resource["service.name"] == "tamma-metrics"
    assert resource["service.instance.id"]  # each process exports its own series


def test_custom_gauge_set_is_a_synchronous_gauge(settings, use_otel):
    settings.TAMMA_METRICS = {"CUSTOM_FAMILIES": CUSTOM}
    sync_metric_families()
    reader = InMemoryMetricReader()
    use_otel(reader=reader, service_name="tamma-ci")
    record.metric("backlog_size", 42, platform="github")
    record.metric("backlog_size", 7, platform="github")
    record.metric("review_rounds", 3, repository="acme/app")
    backends.dispatcher().flush()
    data = reader.get_metrics_data()
    metrics = {m.name: m for m in metric_objects(data)}
    assert isinstance(metrics["tamma_backlog_size"].data, Gauge)
    [point] = metrics["tamma_backlog_size"].data.data_points
    assert (dict(point.attributes), point.value) == ({"platform": "github"}, 7)
    [rounds] = metrics["tamma_review_rounds"].data.data_points
    assert tuple(rounds.explicit_bounds) == (1, 2, 3, 5, 8)
    assert tuple(rounds.bucket_counts) == (0, 0, 1, 0, 0, 0)
    assert metrics["tamma_review_rounds"].unit == ""
    assert data.resource_metrics[0].resource.attributes["service.name"] == "tamma-ci"


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps each request and answers an empty success."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def otlp_receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _number(point) -> float:
    # Recorded values are floats, so OTLP carries them as doubles.
    assert point.WhichOneof("value") == "as_double"
    return point.as_double


def _attributes(point) -> frozenset:
    return frozenset((kv.key, kv.value.string_value) for kv in point.attributes)


def test_otlp_http_export_reaches_a_receiver(use_otel, otlp_receiver, metrics):
    port = otlp_receiver.server_address[1]
    # A long interval: the one export is the final one, on close (flush).
    use_otel(endpoint=f"http://127.0.0.1:{port}/v1/metrics", export_interval_seconds=60)
    before = metrics()
    scenario()
    backends.dispatcher().flush()
    assert [(path, kind) for path, kind, _ in otlp_receiver.received] == [
        ("/v1/metrics", "application/x-protobuf")
    ]
    request = ExportMetricsServiceRequest.FromString(otlp_receiver.received[0][2])
    [resource_metrics] = request.resource_metrics
    service = {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}
    assert service["service.name"] == "tamma-metrics"
    [scope_metrics] = resource_metrics.scope_metrics
    assert scope_metrics.scope.name == "tamma_metrics"
    by_name = {m.name: m for m in scope_metrics.metrics}
    assert sorted(by_name) == [
        "tamma_active_connections",
        "tamma_ai_cost_usd",
        "tamma_ai_request_duration_seconds",
        "tamma_ai_requests",
        "tamma_ai_tokens",
        "tamma_api_response_duration_seconds",  # the scrape before, by the middleware
        "tamma_test_execution_duration_seconds",
    ]
    requests = by_name["tamma_ai_requests"].sum
    assert requests.is_monotonic
    assert {_attributes(p): _number(p) for p in requests.data_points} == {
        key(**CLAUDE, request_type="chat", outcome="success"): 2,
        key(**GPT, request_type="chat", outcome="failure"): 1,
    }
    cost = by_name["tamma_ai_cost_usd"].sum.data_points
    assert {_attributes(p): _number(p) for p in cost} == {key(**CLAUDE): 0.75}
    connections = by_name["tamma_active_connections"].sum
    assert not connections.is_monotonic
    assert [_number(p) for p in connections.data_points] == [1]
    # Every histogram keeps the catalogue's buckets, though the OTLP exporter prefers others.
    for name in ("tamma_ai_request_duration_seconds", "tamma_test_execution_duration_seconds"):
        bounds = {tuple(p.explicit_bounds) for p in by_name[name].histogram.data_points}
        assert bounds == {catalogue.get(name.removeprefix("tamma_")).buckets}, name
    latency = {
        _attributes(p): p
        for p in by_name["tamma_ai_request_duration_seconds"].histogram.data_points
    }
    gpt = latency[key(**GPT, request_type="chat", token_range="10k-100k")]
    assert (gpt.count, gpt.sum, list(gpt.bucket_counts)) == (1, 700.0, [0] * 13 + [1])
    [tests] = by_name["tamma_test_execution_duration_seconds"].histogram.data_points
    assert _attributes(tests) == key(**UNIT)
    assert tuple(tests.explicit_bounds) == catalogue.get("test_execution_duration_seconds").buckets
    assert (tests.count, tests.sum, list(tests.bucket_counts)) == (
        2,
        84.0,
        [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0],
    )
    assert by_name["tamma_test_execution_duration_seconds"].unit == "s"
    assert delta(metrics(), before).value("tamma_metrics_backend_errors_total", backend="otel") == 0


def test_a_dead_otlp_endpoint_is_counted(use_otel, metrics):
    use_otel(
        endpoint=f"http://127.0.0.1:{free_port()}/v1/metrics",
        export_interval_seconds=60,
        timeout_seconds=1,
    )
    before = metrics()
    record.code_change(change_type="update", language="go", actor="system", file_type="go")
    backends.dispatcher().flush()  # the final export fails: counted, never raised
    change = delta(metrics(), before)
    assert change.value("tamma_metrics_backend_errors_total", backend="otel") == 1
    assert (
        change.value(
            "tamma_code_changes_total",
            change_type="update",
            language="go",
            actor="system",
            file_type="go",
        )
        == 1
    )


def test_a_send_that_fails_raises_for_the_dispatcher_to_count(use_otel, metrics):
    class Unusable:
        """Not a MetricReader: the provider refuses it at the first event."""

    before = metrics()  # before the backend: the scrape's own events would be a second batch
    use_otel(reader=Unusable())
    record.code_change(change_type="update", language="go", actor="system", file_type="go")
    backends.dispatcher().flush()
    assert delta(metrics(), before).value("tamma_metrics_backend_errors_total", backend="otel") == 1


@pytest.mark.parametrize("options", [{"export_interval_seconds": 0}, {"timeout_seconds": -1}])
def test_bad_options_are_refused(options):
    with pytest.raises(ValueError, match="must be positive"):
        OtelBackend(**options)

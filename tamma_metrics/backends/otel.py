"""OpenTelemetry push backend: recorded events as OTel metrics, exported over OTLP/HTTP.

Instruments, named like the Prometheus families with the prefix, counters without
``_total`` (OTel's convention; an OTLP -> Prometheus conversion such as the Collector's
adds ``_total`` back to monotonic sums, so the names round-trip):

- counter -> ``Counter`` (``add``), e.g. ``tamma_ai_requests``
- histogram -> ``Histogram`` with explicit bucket boundaries equal to the catalogue's
  (a ``View`` per catalogue histogram, plus the instrument's
  ``explicit_bucket_boundaries_advisory`` for families declared later), unit ``s``
  for families in seconds
- gauge ``inc``/``dec`` -> ``UpDownCounter``; gauge ``set`` -> synchronous ``Gauge``

Attributes are the (guarded) labels. Needs the ``otel`` extra: ``opentelemetry-sdk``
and ``opentelemetry-exporter-otlp-proto-http``. The SDK is imported and the
``MeterProvider`` built on the dispatcher thread at the first event, so the caller
never pays for it. The resource gets ``service.name`` ``tamma-metrics`` unless the
standard ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (or ``service_name``) say
otherwise, and a per-process ``service.instance.id``: every worker exports its own
cumulative series.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .. import catalogue, selfmetrics
from ..catalogue import Kind
from . import Backend, Sample

DEFAULT_SERVICE_NAME = "tamma-metrics"
SERVICE_INSTANCE_ID = "service.instance.id"


class OtelBackend(Backend):
    """Record events on an OpenTelemetry ``MeterProvider``.

    With ``reader`` (any SDK ``MetricReader``, e.g. ``InMemoryMetricReader`` in tests)
    the provider uses it; otherwise a ``PeriodicExportingMetricReader`` exports every
    ``export_interval_seconds`` to ``endpoint`` with the OTLP/HTTP exporter (``None``:
    the exporter's own ``OTEL_EXPORTER_OTLP_*`` environment, default
    ``http://localhost:4318/v1/metrics``). A failed export is counted in
    ``tamma_metrics_backend_errors_total{backend="otel"}`` by the reader's thread.
    """

    name = "otel"

    def __init__(
        self,
        endpoint: str | None = None,
        export_interval_seconds: float = 10,
        reader: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 10,
        service_name: str | None = None,
        resource_attributes: Mapping[str, str] | None = None,
    ) -> None:
        if float(export_interval_seconds) <= 0 or float(timeout_seconds) <= 0:
            raise ValueError("otel export_interval_seconds and timeout_seconds must be positive")
        self.endpoint = endpoint
        self.export_interval_seconds = float(export_interval_seconds)
        self.timeout_seconds = float(timeout_seconds)
        self.reader = reader
        self.headers = dict(headers or {})
        self.service_name = service_name
        self.resource_attributes = dict(resource_attributes or {})
        self.provider: Any = None
        self._meter: Any = None
        self._instruments: dict[tuple[str, str], Any] = {}

    def _build(self) -> None:
        from opentelemetry.sdk.metrics import Histogram, MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource

        from .. import __version__

        reader = self.reader
        if reader is None:
            reader = PeriodicExportingMetricReader(
                _counting_exporter(
                    endpoint=self.endpoint, headers=self.headers, timeout=self.timeout_seconds
                ),
                export_interval_millis=self.export_interval_seconds * 1000,
                export_timeout_millis=self.timeout_seconds * 1000,
            )
        attributes = dict(self.resource_attributes)
        if self.service_name:
            attributes[SERVICE_NAME] = self.service_name
        resource = Resource.create(attributes)  # merges OTEL_RESOURCE_ATTRIBUTES etc.
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        if SERVICE_INSTANCE_ID not in resource.attributes:  # older SDKs do not add one
            resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
        # A view per histogram pins the catalogue's buckets whatever the reader or
        # exporter prefers (OTLP exporters prefer default buckets, which some SDK
        # versions let win over the instrument's advisory boundaries).
        views = [
            View(
                instrument_type=Histogram,
                instrument_name=family.full_name,
                aggregation=ExplicitBucketHistogramAggregation([float(b) for b in family.buckets]),
            )
            for family in catalogue.families()
            if family.kind is Kind.HISTOGRAM
        ]
        # close() shuts it down; the dispatcher, not atexit, owns its lifetime.
        self.provider = MeterProvider(
            metric_readers=[reader], resource=resource, views=views, shutdown_on_exit=False
        )
        self._meter = self.provider.get_meter("tamma_metrics", __version__)

    def _instrument(self, sample: Sample) -> Any:
        setter = sample.kind == "gauge" and sample.operation == "set"
        key = (sample.name, "set" if setter else sample.kind)
        instrument = self._instruments.get(key)
        if instrument is None:
            instrument = self._create(sample, setter)
            self._instruments[key] = instrument
        return instrument

    def _create(self, sample: Sample, setter: bool) -> Any:
        family = sample.family
        name, description = family.full_name, family.help
        if family.kind is Kind.COUNTER:
            return self._meter.create_counter(family.metric_name, description=description).add
        if family.kind is Kind.HISTOGRAM:
            return self._meter.create_histogram(
                name,
                unit="s" if family.unit == "seconds" else "",
                description=description,
                explicit_bucket_boundaries_advisory=[float(b) for b in family.buckets],
            ).record
        if setter:
            return self._meter.create_gauge(name, description=description).set
        return self._meter.create_up_down_counter(name, description=description).add

    def send(self, samples: Sequence[Sample]) -> None:
        if self.provider is None:
            self._build()
        for sample in samples:
            apply = self._instrument(sample)
            value = -sample.value if sample.operation == "dec" else sample.value
            apply(value, sample.labels)

    def close(self) -> None:
        """Export what is left and stop the reader's thread."""
        if self.provider is not None:
            provider, self.provider = self.provider, None
            self._instruments.clear()
            provider.shutdown(timeout_millis=self.timeout_seconds * 1000)


def _counting_exporter(**options: Any) -> Any:
    """The OTLP/HTTP exporter, counting each failed export as a backend error."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    class CountingExporter(OTLPMetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float | None = 10000, **kw: Any) -> Any:
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kw)
            if result is not MetricExportResult.SUCCESS:
                selfmetrics.count_backend_error(OtelBackend.name)
            return result

    return CountingExporter(**options)

"""OpenTelemetry tracer and meter providers for a process.

Exporters: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, console when ``ZT_OTEL_CONSOLE`` is
true, in-memory in tests (:func:`install_in_memory`). The global provider is set once per
process; tests share one in-memory exporter and clear it between tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_state: dict[str, Any] = {}


@dataclass
class InMemoryTelemetry:
    """What tests read: finished spans and collected metrics."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader


def _resource(service: str) -> Resource:
    return Resource.create({"service.name": service, "service.namespace": "zhongtai"})


def setup_telemetry(service: str, *, console: bool = False, metrics_port: int | None = None) -> None:
    """Install process-wide providers once; later calls are no-ops."""
    if _state.get("installed"):
        return
    tracer_provider = TracerProvider(resource=_resource(service))
    readers: list[MetricReader] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if console:
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if metrics_port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="0.0.0.0")  # noqa: S104 - scraped from the pod network
        readers.append(PrometheusMetricReader())
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=_resource(service), metric_readers=readers))
    _state.update(installed=True, tracer_provider=tracer_provider)


def install_in_memory(service: str = "test") -> InMemoryTelemetry:
    """Process-wide in-memory exporters for tests (idempotent: returns the same pair)."""
    if "memory" in _state:
        return _state["memory"]  # type: ignore[no-any-return]
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    tracer_provider = TracerProvider(resource=_resource(service))
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=_resource(service), metric_readers=[reader]))
    _state.update(installed=True, tracer_provider=tracer_provider, memory=InMemoryTelemetry(exporter, reader))
    return _state["memory"]  # type: ignore[no-any-return]


def shutdown_telemetry() -> None:
    """Flush spans (SIGTERM path)."""
    provider = _state.get("tracer_provider")
    if provider is not None:
        provider.force_flush()


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store in an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


_W3C = TraceContextTextMapPropagator()


def context_from_traceparent(traceparent: str | None) -> Any:
    """An OpenTelemetry context carrying a stored W3C traceparent (or the empty context).

    The stored value is always a W3C ``traceparent``, so the W3C propagator reads it directly
    (the global composite propagator also runs baggage: twice the cost on a consumer's hot path).
    """
    return _W3C.extract({"traceparent": traceparent}) if traceparent else Context()


tracer = trace.get_tracer("zhongtai.kit")
meter = metrics.get_meter("zhongtai.kit")

"""OpenTelemetry tracer and meter providers for a process.

Exporters: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, console when ``ZT_OTEL_CONSOLE`` is
true, in-memory in tests (:func:`install_in_memory`). The global provider is set once per
process; tests share one in-memory exporter and clear it between tests.

Nothing read, nothing recorded (ADR 0030): when :func:`setup_telemetry` installs no span
exporter (``make run``, and the chart's default with ``config.otel.endpoint`` empty), a
per-call SERVER span would be built, filled and dropped for nobody; :func:`spans_read` says so,
and the kit's per-call wrapper then starts :func:`id_only_span` — the same trace and span ids,
parent and sampled flag a recorded span would carry into logs, outbox rows and outgoing calls,
without its attributes, status or timing. Likewise :func:`metrics_read` is False with no metric
reader, and the exemplar filter is off unless an OTLP metric exporter (the only one that sends
exemplars) is installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_state: dict[str, Any] = {}
#: Whether anything reads this process's spans / metrics (see the module docstring).
_read = {"spans": True, "metrics": True}


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
    otlp = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if otlp:
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
    exemplars = None if otlp else AlwaysOffExemplarFilter()  # (Prometheus drops exemplars anyway)
    metrics.set_meter_provider(
        MeterProvider(resource=_resource(service), metric_readers=readers, exemplar_filter=exemplars)
    )
    _state.update(installed=True, tracer_provider=tracer_provider)
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"  # (spans are no-ops then)
    _read.update(spans=otlp or console or disabled, metrics=bool(readers))


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
    _read.update(spans=True, metrics=True)
    return _state["memory"]  # type: ignore[no-any-return]


def spans_read() -> bool:
    """False when this process's tracer provider exports its spans nowhere (ADR 0030)."""
    return _read["spans"]


def metrics_read() -> bool:
    """False when this process's meter provider has no reader (ADR 0030)."""
    return _read["metrics"]


_IDS = RandomIdGenerator()
_ROOT_FLAGS = TraceFlags(TraceFlags.SAMPLED)
_NO_STATE = TraceState()


def id_only_span(context: Context | None) -> Span:
    """A non-recording span with the ids the SDK's default sampler (parent-based, always on)
    would give a new span under ``context`` (or the current context): the parent's trace id,
    flags and trace state, a new span id; a new sampled trace at the root. For a process that
    exports no spans (:func:`spans_read` is False): what leaves the process is the same."""
    parent = trace.get_current_span(context).get_span_context()
    if parent.is_valid:
        ids = SpanContext(parent.trace_id, _IDS.generate_span_id(), False, parent.trace_flags, parent.trace_state)
    else:
        ids = SpanContext(_IDS.generate_trace_id(), _IDS.generate_span_id(), False, _ROOT_FLAGS, _NO_STATE)
    return NonRecordingSpan(ids)


def start_span(
    tracer: trace.Tracer,
    name: str,
    context: Context | None,
    kind: trace.SpanKind,
    attributes: Callable[[], Mapping[str, Any]],
) -> Span:
    """``tracer.start_span`` — or, when this process exports no spans (:func:`spans_read` False),
    :func:`id_only_span` under ``context``: the same ids leave the process, and the span's
    attributes (``attributes()``) are not even built (ADR 0030)."""
    if not spans_read():
        return id_only_span(context)
    return tracer.start_span(name, context=context, kind=kind, attributes=attributes())


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

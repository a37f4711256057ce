"""services.kit.telemetry: the in-memory providers and W3C traceparent round trips."""

from __future__ import annotations

import re
import uuid

from opentelemetry import context as otel_context
from opentelemetry import trace

from services.kit.telemetry import (
    InMemoryTelemetry,
    context_from_traceparent,
    current_traceparent,
    install_in_memory,
    meter,
    tracer,
)

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def finished(memory: InMemoryTelemetry, name: str) -> list[object]:
    return [s for s in memory.spans.get_finished_spans() if s.name == name]


def test_install_in_memory_is_idempotent() -> None:
    first = install_in_memory()
    second = install_in_memory("another-service")
    assert second is first
    assert isinstance(first, InMemoryTelemetry)


def test_install_in_memory_captures_finished_spans() -> None:
    memory = install_in_memory()
    name = unique("unit-span")
    with tracer.start_as_current_span(name, attributes={"k": "v"}):
        assert finished(memory, name) == []  # exported when it ends
    (span,) = finished(memory, name)
    assert span.attributes == {"k": "v"}  # type: ignore[attr-defined]
    assert span.resource.attributes["service.namespace"] == "zhongtai"  # type: ignore[attr-defined]


def test_install_in_memory_collects_metrics() -> None:
    memory = install_in_memory()
    name = unique("unit.counter")
    meter.create_counter(name).add(3)
    data = memory.metrics.get_metrics_data()
    points = [
        point.value  # type: ignore[union-attr]
        for rm in data.resource_metrics  # type: ignore[union-attr]
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]
    assert points == [3]


def test_current_traceparent_is_the_current_spans_w3c_traceparent() -> None:
    install_in_memory()
    with tracer.start_as_current_span(unique("outer")) as span:
        traceparent = current_traceparent()
        ctx = span.get_span_context()
    assert traceparent is not None
    match = TRACEPARENT.match(traceparent)
    assert match is not None, traceparent
    assert match.groups() == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{int(ctx.trace_flags):02x}")
    assert int(match.group(3), 16) & 0x01  # sampled


def test_current_traceparent_outside_a_span_is_none() -> None:
    assert current_traceparent() is None


def test_a_child_started_in_a_stored_traceparent_continues_the_trace() -> None:
    memory = install_in_memory()
    with tracer.start_as_current_span(unique("producer")) as parent:
        stored = current_traceparent()
    parent_ctx = parent.get_span_context()

    name = unique("consumer")
    with tracer.start_as_current_span(name, context=context_from_traceparent(stored)):
        pass
    (child,) = finished(memory, name)
    assert child.context.trace_id == parent_ctx.trace_id  # type: ignore[attr-defined]
    assert child.parent is not None and child.parent.span_id == parent_ctx.span_id  # type: ignore[attr-defined]
    assert child.parent.is_remote  # type: ignore[attr-defined]


def test_a_missing_or_malformed_traceparent_gives_an_empty_context() -> None:
    memory = install_in_memory()
    for value in (None, "", "not-a-traceparent"):
        ctx = context_from_traceparent(value)
        assert not trace.get_current_span(ctx).get_span_context().is_valid
        name = unique("root")
        with tracer.start_as_current_span(name, context=ctx):
            pass
        (span,) = finished(memory, name)
        assert span.parent is None  # type: ignore[attr-defined]  # a new root, not a child


def test_an_id_only_span_starts_a_sampled_trace_at_the_root() -> None:
    from services.kit.telemetry import id_only_span

    span = id_only_span(None)
    ctx = span.get_span_context()
    assert not span.is_recording()
    assert ctx.is_valid and ctx.trace_flags.sampled and not ctx.is_remote


def test_an_id_only_span_continues_its_parent_as_the_sdk_sampler_would() -> None:
    from services.kit.telemetry import id_only_span

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"  # (not sampled upstream)
    span = id_only_span(context_from_traceparent(parent))
    ctx = span.get_span_context()
    assert format(ctx.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(ctx.span_id, "016x") != "b7ad6b7169203331"
    assert not ctx.trace_flags.sampled  # (the parent's decision carries on)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        assert (current_traceparent() or "").startswith("00-0af7651916cd43dd8448eb211c80319c-")
    finally:
        otel_context.detach(token)


def test_spans_and_metrics_count_as_read_once_in_memory_exporters_are_installed() -> None:
    from services.kit.telemetry import metrics_read, spans_read

    install_in_memory()
    assert spans_read() and metrics_read()

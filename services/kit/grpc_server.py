"""gRPC server bootstrap on grpc.aio: health, reflection, the kit's per-call work, graceful drain.

Every unary handler is wrapped, when it is registered, in what every RPC needs (:class:`KitCall`),
in order: a SERVER span (W3C ``traceparent`` from the metadata; health and reflection are not
traced), authenticate the bearer token and check the method's ``required_scopes`` from the
contract, validate the request with protovalidate, run the handler, translate
:class:`~services.kit.errors.ZhongtaiError` to a rich ``google.rpc.Status`` (an infrastructure
failure — database down, refusing, starting up, a lost connection; see
:func:`services.kit.faults.is_infrastructure_error` — becomes UNAVAILABLE with reason
``DATABASE_UNAVAILABLE``; anything else unexpected a bare INTERNAL), record RED metrics and an
access log line. No ``grpc.aio`` interceptors: they cost every call more than the work itself
(docs/perf/services.md, ADR 0025).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy.exc import DBAPIError

from services.kit.auth import (
    Principal,
    TokenVerifier,
    authorize,
    bearer_token,
    current_principal,
    required_scopes,
)
from services.kit.errors import Unavailable, ZhongtaiError, internal_status, to_rpc_status
from services.kit.faults import is_infrastructure_error
from services.kit.logging import HotLogger
from services.kit.telemetry import metrics_read, spans_read, start_span
from services.kit.validation import validate_request, warm_up

log = HotLogger("zhongtai.grpc")  # (the access log: a line per call)

#: Keepalive agreed between our servers and clients (a mismatch kills connections with too_many_pings).
KEEPALIVE_TIME_MS = 30_000
SERVER_MIN_PING_INTERVAL_MS = 10_000

SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.so_reuseport", 0),  # a second bind on the same port fails loudly
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]

_meter = metrics.get_meter("zhongtai.grpc")
_duration = _meter.create_histogram("rpc.server.duration", unit="ms", description="gRPC server call duration")


def _db_error_fields(exc: BaseException) -> dict[str, str | None]:
    """What the log says of a database failure: the driver's own error (the innermost of what
    SQLAlchemy wrapped: type, SQLSTATE, first line of its message). Never ``str()`` of the
    SQLAlchemy error itself: that carries the statement and its parameters."""
    cause = exc
    for _ in range(8):
        inner = getattr(cause, "orig", None) or cause.__cause__
        if not isinstance(inner, BaseException):
            break
        cause = inner
    state = getattr(cause, "sqlstate", None)
    lines = str(cause).splitlines()
    return {
        "error": type(cause).__name__,
        "sqlstate": state if isinstance(state, str) else None,
        "detail": lines[0][:200] if lines and not isinstance(cause, DBAPIError) else "",
    }


def _unexpected(exc: Exception, method: str) -> tuple[grpc.StatusCode, Any]:
    """The status of an exception that is no :class:`ZhongtaiError`, logged once."""
    if is_infrastructure_error(exc):
        # The database is down, restarting, refusing or lost the connection (in a read, a write
        # or at commit): nothing is wrong with the request. UNAVAILABLE (503 at the edge) says
        # "retry" — safe for a write sent with its request_id / Idempotency-Key. The pool has
        # dropped the broken connection; the same call made again gets a new one. Expected
        # during an outage: no stack trace.
        down = Unavailable("the database is unavailable; retry later", reason="DATABASE_UNAVAILABLE")
        log.warning("rpc failed: database unavailable", rpc=method, **_db_error_fields(exc))
        return down.code, to_rpc_status(down)
    log.exception("rpc failed", rpc=method)
    return grpc.StatusCode.INTERNAL, internal_status()


#: Health and reflection are not traced: probes would flood the traces.
_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class KitCall:
    """One unary method's handler wrapped in what every RPC needs, built once per method.

    In order: a SERVER span (the caller's ``traceparent`` as parent; not for health and
    reflection), the bearer token and the method's ``required_scopes``, protovalidate, the
    handler, the translation of errors to ``google.rpc.Status``, RED metrics and the access log
    line (inside the span: it carries the trace ids). The wrapping happens when the servicer is
    registered (:class:`_WrappingServer`), not in ``grpc.aio`` interceptors: each aio interceptor
    costs every call a coroutine chain and a new handler object (ADR 0025).
    """

    def __init__(self, method: str, behavior: Any, verifier: TokenVerifier | None, *, validate: bool) -> None:
        self.method = method
        self._behavior = behavior
        self._scoped = required_scopes(method) is not None
        self._verifier = verifier if self._scoped else None
        self._validate = validate and self._scoped
        self._traced = not method.startswith(_UNTRACED_PREFIXES)
        service, _, name = method.lstrip("/").partition("/")
        self._span_attributes = {"rpc.system": "grpc", "rpc.method": name, "rpc.service": service}

    async def handle(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        if not self._traced:
            return await self._serve(request, context, metadata, None)
        parent = propagate.extract(metadata) if _PROPAGATED.intersection(metadata) else None
        span = start_span(
            _tracer, self.method, parent, SpanKind.SERVER,
            lambda: {**self._span_attributes, **_peer_attributes(context, metadata)},
        )  # fmt: skip
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await self._serve(request, context, metadata, span)
        finally:
            otel_context.detach(token)
            span.end()

    async def _serve(self, request: Any, context: grpc.aio.ServicerContext, metadata: dict[str, str],
                     span: Span | None) -> Any:  # fmt: skip
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        reset = None
        principal: Principal | None = None
        try:
            if self._verifier is not None:
                principal = self._verifier.verify(bearer_token(metadata.get("authorization")))
                authorize(principal, self.method)
                reset = current_principal.set(principal)
            if self._validate:
                validate_request(request)
            return await self._behavior(request, context)
        except ZhongtaiError as exc:
            code = exc.code
            language = metadata.get("accept-language") if exc.localized else None  # (LocalizedMessage)
            await context.abort_with_status(rpc_status.to_status(to_rpc_status(exc, language)))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            code = context.code() or grpc.StatusCode.CANCELLED  # type: ignore[assignment]
            raise
        except Exception as exc:
            if span is not None:
                span.record_exception(exc)
            code, status = _unexpected(exc, self.method)
            await context.abort_with_status(rpc_status.to_status(status))
        finally:
            if reset is not None:
                current_principal.reset(reset)
            elapsed_ms = (time.perf_counter() - started) * 1000
            code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            if span is not None and span.is_recording():
                _end_status(span, code)
            if metrics_read():
                _duration.record(elapsed_ms, {"rpc.method": self.method, "rpc.grpc.status_code": code_name})
            log.info(
                "rpc",
                rpc=self.method,
                code=code_name,
                duration_ms=round(elapsed_ms, 2),
                client_id=principal.client_id if principal else None,
            )


_tracer = trace.get_tracer("opentelemetry.instrumentation.grpc")
#: Metadata keys the global propagator reads (W3C trace context and baggage).
_PROPAGATED = frozenset({"traceparent", "tracestate", "baggage"})
#: Codes whose server span is an error, as OpenTelemetry's gRPC instrumentation marks them.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _peer_attributes(context: grpc.aio.ServicerContext, metadata: dict[str, str]) -> dict[str, str]:
    """The caller's address and user agent, as OpenTelemetry's gRPC instrumentation records them."""
    out: dict[str, str] = {}
    if "user-agent" in metadata:
        out["rpc.user_agent"] = metadata["user-agent"]
    peer = context.peer() or ""
    if peer.startswith(("ipv4:", "ipv6:")):
        ip, _, port = peer.split(",")[0].split(":", 1)[1].rpartition(":")
        out["net.peer.ip"], out["net.peer.port"] = unquote(ip), port
        if ip in ("[::1]", "127.0.0.1"):
            out["net.peer.name"] = "localhost"
    return out


def _end_status(span: Span, code: Any) -> None:
    if isinstance(code, grpc.StatusCode):
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, f"{code}"))


def wrap_handler(method: str, handler: Any, verifier: TokenVerifier | None, *, validate: bool) -> Any:
    """A unary-unary handler with :class:`KitCall` around its behaviour; streams as they are."""
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        # (a bound coroutine method: grpc.aio runs a unary behaviour as a coroutine only if
        # inspect says it is one, which a callable object is not)
        KitCall(method, handler.unary_unary, verifier, validate=validate).handle,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose unary methods come wrapped (once per method, then reused)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable[[str, Any], Any]) -> None:
        self._inner = inner
        self._wrap = wrap
        self._cache: dict[str, tuple[Any, Any]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        handler = self._inner.service(handler_call_details)
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._cache[method] = (handler, wrapped)
        return wrapped


class _WrappingServer:
    """What a capability's ``register`` is given: the ``grpc.aio`` server, whose handlers get the
    kit's :class:`KitCall` as they are added (generated ``add_*Servicer_to_server`` and generic
    handlers alike); everything else is the server's own."""

    def __init__(self, server: grpc.aio.Server, wrap: Callable[[str, Any], Any]) -> None:
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h, self._wrap) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        wrapped = {name: self._wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def traced(details: grpc.HandlerCallDetails) -> bool:
    """The OTel server interceptor's filter: everything but health and reflection.

    A plain prefix test: OTel's composable ``filters`` (``negate(any_of(health_check(), ...))``)
    did the same with ``isinstance`` checks against typing Protocols and ``os.path`` splits on
    every call, ~6 % of a small RPC's server CPU.
    """
    method = details.method  # type: ignore[attr-defined]
    if isinstance(method, bytes):
        method = method.decode()
    return not method.startswith(_UNTRACED_PREFIXES)


#: The gRPC health service name that answers SERVING while the process runs, whatever its
#: readiness: liveness probes ask for it, so a process waiting out a database outage (NOT_SERVING
#: overall) is not restarted for it.
LIVENESS_SERVICE = "liveness"


class GrpcServer:
    """A grpc.aio server with health and reflection; ``start()``/``stop()`` are symmetric.

    Health: the overall status (service ``""``) and each service's are the process's readiness,
    SERVING unless :meth:`set_ready` says otherwise (e.g. a consumer that cannot apply events);
    :data:`LIVENESS_SERVICE` stays SERVING until shutdown.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        register: Callable[[grpc.aio.Server], None],
        service_names: Sequence[str],
        verifier: TokenVerifier | None,
        max_concurrent_rpcs: int = 256,
        shutdown_grace_s: float = 10.0,
        validate: bool = True,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._register = register
        self._service_names = list(service_names)
        self._verifier = verifier
        self._max_concurrent = max_concurrent_rpcs
        self._grace = shutdown_grace_s
        self._validate = validate
        self._server: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        self._ready = True
        self.port = 0

    async def set_ready(self, ready: bool, reason: str = "") -> None:
        """Report the process ready (SERVING) or not (NOT_SERVING) in the gRPC health service;
        before ``start()`` it is remembered."""
        if ready != self._ready:
            log.info("readiness changed", ready=ready, reason=reason)
        self._ready = ready
        if self._health is not None:
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ["", *self._service_names]:
                await self._health.set(name, status)

    async def start(self) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=self._max_concurrent)
        verifier, validate = self._verifier, self._validate
        wrapping = _WrappingServer(server, lambda m, h: wrap_handler(m, h, verifier, validate=validate))
        self._register(wrapping)  # type: ignore[arg-type]
        if self._validate:
            warm_up(self._service_names)  # (compiles each request type's rules before serving)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, wrapping)
        names = [*self._service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        # (on the server itself: reflection picks its aio servicer by ``isinstance(server, aio.Server)``,
        # and its one method is a stream, which the kit does not wrap anyway)
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
        self.port = server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if not self.port:
            raise RuntimeError(f"cannot bind gRPC on {self._host}:{self._requested_port}")
        await server.start()
        self._server, self._health = server, health
        await health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.set_ready(self._ready)
        log.info("grpc server started", port=self.port, services=self._service_names)

    async def stop(self) -> None:
        """Report NOT_SERVING, then drain in-flight RPCs for up to the grace period."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await server.stop(self._grace)
        log.info("grpc server stopped")

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


CLIENT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),  # retries are explicit, per call, only on UNAVAILABLE
    # Spread calls over every address a `dns:///` target resolves to (headless Services in k8s).
    ("grpc.lb_policy_name", "round_robin"),
    # Reconnect back-off (gRPC's defaults: 1 s initial, x1.6, 120 s max, ±20 % jitter): a
    # backend that was down a minute is otherwise retried only every ~1-2 minutes, and calls
    # fail fast meanwhile although it is back. The next attempt after a failure comes at most
    # 300 ms x 1.2 = 360 ms after the previous one started, so the first call succeeds within
    # 1 s of the backend's SERVING health, with margin (ADR 0009). A refused connect costs
    # next to nothing, so ~3 attempts a second at a dead address are harmless.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 300),
    # Despite its name, C-core reads this as the time a connection attempt is given at least
    # (the connect timeout, 20 s by default): 2 s covers one lost SYN (retransmitted after 1 s)
    # while a black-holed address is given up, and tried again, well before 20 s.
    ("grpc.min_reconnect_backoff_ms", 2_000),
]


def client_channel(target: str, *, interceptors: Sequence[Any] = ()) -> grpc.aio.Channel:
    """A long-lived aio channel with agreed keepalive and client tracing (create inside the loop).

    With a span exporter, OpenTelemetry's client interceptors (a CLIENT span per call, the trace
    context in the metadata). Without one (ADR 0030) no interceptor: each unary call only gets
    the current trace context added to its metadata, so the callee continues the same trace —
    an aio interceptor costs every call a task and a wrapped call object, and the span nobody."""
    if not spans_read():
        channel = grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS, interceptors=list(interceptors) or None)
        return _PropagatingChannel(channel)  # type: ignore[return-value]
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return grpc.aio.insecure_channel(
        target, options=CLIENT_OPTIONS, interceptors=[*aio_client_interceptors(), *interceptors]
    )


class _Propagating:
    """A unary-unary multi-callable that sends the current trace context (W3C ``traceparent``,
    baggage: the global propagator, as OpenTelemetry's client interceptor does) with each call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier:
            metadata = (*(metadata or ()), *carrier.items())
        return self._inner(request, metadata=metadata, **kwargs)


class _PropagatingChannel:
    """A ``grpc.aio`` channel whose unary-unary calls carry the trace context (see above)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> _Propagating:
        return _Propagating(self._channel.unary_unary(*args, **kwargs))

    async def __aenter__(self) -> _PropagatingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

"""One long-lived grpc.aio channel per backend, created inside the running loop (lifespan).

Channels use the kit's agreed options (:data:`services.kit.grpc_server.CLIENT_OPTIONS`:
keepalive, round robin, no implicit retries) but no client interceptors: grpc.aio's
interceptor machinery plus OpenTelemetry's interceptor cost ~300 µs CPU per call, about as
much as the call itself. The client span (same name, kind and ``rpc.*`` attributes as the
OpenTelemetry instrumentation) and the ``traceparent`` injection are done inline in
:meth:`Backends.call`. Calls always carry a deadline; only idempotent (GET) calls are
retried, only on UNAVAILABLE (or CANCELLED by a backend stopping mid-call), with jittered
backoff, and never beyond the deadline.

A call waits for a ready connection (ADR 0009): on a READY channel it goes straight out (one
``get_state``, well under a microsecond). Otherwise it waits for the channel to become READY for
at most ``connect_wait_s`` (and never beyond the deadline) — the channel's short reconnect
back-off (``CLIENT_OPTIONS``) makes a backend that is back READY within a few hundred ms — and
if the channel is still not READY, it fails with UNAVAILABLE (``BACKEND_UNAVAILABLE``, HTTP 503)
without sending anything: a backend that stays down is answered promptly, not at the deadline.
One waiter per backend is shared by every call waiting on it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.routing import Route
from services.kit.errors import ERROR_DOMAIN
from services.kit.grpc_server import CLIENT_OPTIONS

tracer = trace.get_tracer("zhongtai.gateway.grpc")
_OK = grpc.StatusCode.OK.value[0]
_READY = grpc.ChannelConnectivity.READY
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
#: Retried for idempotent calls: the backend is not there, or it stopped mid-call (a bare
#: CANCELLED: the gateway never cancels a call it still waits for; see errors.status_from_rpc_error).
_RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class BackendNotReady(grpc.aio.AioRpcError):
    """UNAVAILABLE raised by the gateway itself: the backend's channel did not become READY in
    time, so nothing was sent. Carries a ``google.rpc.Status`` (reason ``BACKEND_UNAVAILABLE``,
    the capability in its metadata) that :func:`gateway.errors.status_from_rpc_error` passes on."""

    def __init__(self, capability: str) -> None:
        status = status_pb2.Status(
            code=_UNAVAILABLE.value[0], message=f"the {capability} service is not reachable, retry later"
        )
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(
                reason="BACKEND_UNAVAILABLE", domain=ERROR_DOMAIN, metadata={"backend": capability}
            )
        )
        super().__init__(
            _UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
            details=status.message,
        )


def _client_attributes(full_method: str) -> dict[str, Any]:
    service, _, method = full_method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


class Backends:
    """Channels by capability, and a ready-made unary callable per route."""

    def __init__(
        self,
        targets: dict[str, str],
        routes: Iterable[Route],
        *,
        retry_attempts: int,
        backoff_s: float,
        connect_wait_s: float = 1.0,
    ):
        self._routes = list(routes)
        missing = sorted({r.capability for r in self._routes} - set(targets))
        if missing:
            raise ValueError(
                f"no gRPC target for {', '.join(missing)}: "
                'set ZT_<NAME>_TARGET or ZT_BACKENDS as JSON, e.g. {"name": "host:port"}'
            )
        used = {r.capability for r in self._routes}
        self.targets = {k: v for k, v in targets.items() if k in used}
        self._attempts = retry_attempts
        self._backoff = backoff_s
        self._connect_wait = connect_wait_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        # full method -> (unary callable, its channel, capability)
        self._calls: dict[str, tuple[Any, grpc.aio.Channel, str]] = {}
        # capability -> the one task waiting for its channel to become READY
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._attributes = {r.full_method: _client_attributes(r.full_method) for r in self._routes}

    async def start(self) -> None:
        for capability, target in self.targets.items():
            self._channels[capability] = grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS)
        for route in self._routes:
            if route.full_method not in self._calls:
                channel = self._channels[route.capability]
                call = channel.unary_unary(
                    route.full_method,
                    request_serializer=route.input_class.SerializeToString,
                    response_deserializer=route.output_class.FromString,
                    # As generated stubs do: the method is registered with the channel once,
                    # not interned again on every call.
                    _registered_method=True,
                )
                self._calls[route.full_method] = (call, channel, route.capability)

    async def stop(self) -> None:
        channels, self._channels = self._channels, {}
        self._calls.clear()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.cancel()
        for channel in channels.values():
            await channel.close(grace=1.0)

    async def call(
        self,
        route: Route,
        request: Message,
        *,
        timeout_s: float,
        metadata: Sequence[tuple[str, str]],
        retry: bool = False,
    ) -> Message:
        """Invoke the route's RPC with a deadline, on a ready connection; retry UNAVAILABLE for
        idempotent calls only: reads, and writes that carry a request_id (``retry``), which the
        service deduplicates. Round robin sends the retry to another replica when there is one.
        :class:`BackendNotReady` if no connection is ready in time."""
        idempotent = retry or route.idempotent
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        call, channel, capability = self._calls[route.full_method]
        connect_by: float | None = None  # end of this request's connect wait, fixed on first need
        attempt = 0
        while True:
            # Not made current (nothing runs inside it but the call): cheaper than start_as_current_span.
            span = tracer.start_span(
                route.full_method, kind=SpanKind.CLIENT, attributes=self._attributes[route.full_method]
            )
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            try:
                if self._connect_wait and channel.get_state() is not _READY:
                    if connect_by is None:
                        connect_by = min(deadline, loop.time() + self._connect_wait)
                    await self._until_ready(capability, channel, connect_by - loop.time())
                remaining = deadline - loop.time()
                response = await call(request, timeout=max(remaining, 0.001), metadata=(*metadata, *carrier.items()))
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                span.set_status(Status(StatusCode.ERROR, f"{code.name}: {exc.details()}"))
                span.end()
                attempt += 1
                if (
                    code not in _RETRIED
                    or not idempotent
                    or attempt >= self._attempts
                    or isinstance(exc, BackendNotReady)  # the connect wait is spent: no retry
                ):
                    raise
                pause = self._backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
                if deadline - loop.time() <= pause:
                    raise
            except BaseException:
                span.set_status(Status(StatusCode.ERROR))
                span.end()
                raise
            else:
                span.set_attribute("rpc.grpc.status_code", _OK)
                span.end()
                return response  # type: ignore[no-any-return]
            await asyncio.sleep(pause)

    async def _until_ready(self, capability: str, channel: grpc.aio.Channel, budget_s: float) -> None:
        """Wait up to ``budget_s`` for the channel to be READY, or raise :class:`BackendNotReady`.

        Every waiting call shares one task per backend (``channel_ready``: asks the channel to
        connect, then follows its state changes), so a burst of requests to a backend that is
        down adds one connectivity watch, not one each.
        """
        if budget_s > 0:
            waiter = self._waiters.get(capability)
            if waiter is None or waiter.done():
                waiter = self._waiters[capability] = asyncio.ensure_future(channel.channel_ready())
            try:
                await asyncio.wait_for(asyncio.shield(waiter), budget_s)
            except TimeoutError:
                pass
            else:
                return
        raise BackendNotReady(capability)

    async def readiness(self, timeout_s: float = 1.0) -> dict[str, str]:
        """Each backend's gRPC health (overall server status), by capability."""

        async def check(capability: str, channel: grpc.aio.Channel) -> tuple[str, str]:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                return capability, exc.code().name
            return capability, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        results = await asyncio.gather(*(check(c, ch) for c, ch in self._channels.items()))
        return dict(results)

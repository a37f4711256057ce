"""Calls to another capability over gRPC, as this service: the generic part of every service client.

A capability that needs another one's answer (the product service asks the customer service
for an eligibility profile; the data hub asks it whether a customer exists) builds a thin
layer on :class:`ServiceClient`, which owns the plumbing:

- One long-lived channel (the kit's client keepalive options), opened in ``start()`` inside the
  event loop and closed in ``stop()`` (a lifecycle component). Each attempt is a CLIENT span
  named and attributed as OpenTelemetry's gRPC instrumentation names it (``/<service>/<method>``,
  ``rpc.system``/``rpc.service``/``rpc.method``/``rpc.grpc.status_code``), and the trace travels
  in the call metadata (``traceparent``) — made here, not by aio client interceptors, which cost
  a task and a copied call per call (docs/perf/services.md, wave 5). Without a span exporter
  only the span's ids travel (ADR 0030).
- Every call has a deadline: the configured one, shortened to what is left of the incoming
  call's own deadline (``context.time_remaining()``, passed as ``time_remaining``).
- It retries only UNAVAILABLE (callers use it for reads, so retrying is safe), with jittered
  exponential backoff, and only while the deadline lasts.
- It calls as this service itself: the bearer token comes from
  :mod:`services.kit.service_auth`, never from the end user.
- Errors are named after the capability called (``capability="customer"``): NOT_FOUND becomes
  :class:`NotFound` (``CUSTOMER_NOT_FOUND``); an upstream that is down, too slow or refusing
  becomes :class:`Unavailable` (``CUSTOMER_SERVICE_UNAVAILABLE``, metadata ``upstream_code``);
  no token becomes :class:`Unavailable` (``SERVICE_TOKEN_UNAVAILABLE``). Nothing here yields
  INTERNAL.

:class:`CallerSettings` holds the settings of the service's own token (``ZT_SERVICE_*``) and
builds the provider (:meth:`CallerSettings.service_tokens`).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import Field, field_validator, model_validator

from services.kit.config import ServiceSettings
from services.kit.errors import NotFound, Unavailable
from services.kit.grpc_server import CLIENT_OPTIONS
from services.kit.logging import get_logger
from services.kit.service_auth import (
    ServiceTokenError,
    ServiceTokenProvider,
    parse_scopes,
    service_token_provider,
)
from services.kit.telemetry import id_only_span, spans_read

#: Below this much time left a call cannot succeed; give up instead of sending it.
MIN_ATTEMPT_S = 0.005

Stub = TypeVar("Stub")
_tracer = trace.get_tracer("zhongtai.clients")


class ServiceClient(Generic[Stub]):
    """Unary reads from another capability; ``start()``/``stop()`` own the channel.

    A thin layer declares the generated stub class (``stub_class =
    customer_pb2_grpc.CustomerServiceStub``) and adds its reads on :meth:`call`. The capability
    called is named after the stub (``CustomerServiceStub`` → ``customer``) in messages and
    error reasons; the logger after the layer's module (``services.product.customers`` →
    ``zhongtai.product.customers``).
    """

    stub_class: Callable[[grpc.aio.Channel], Stub]

    def __init__(
        self,
        target: str,
        tokens: ServiceTokenProvider,
        *,
        deadline_s: float = 2.0,
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 0.5,
    ) -> None:
        self._target = target
        self._tokens = tokens
        capability = capability_of(self.stub_class)
        self._capability = capability
        self._lookup = f"{capability} lookup"
        self._unavailable = f"{capability.upper()}_SERVICE_UNAVAILABLE"
        self.deadline_s = deadline_s
        self._initial_backoff = initial_backoff_s
        self._max_backoff = max_backoff_s
        self._log = get_logger("zhongtai." + type(self).__module__.removeprefix("services."))
        self._channel: grpc.aio.Channel | None = None
        self._stub: Stub | None = None

    async def start(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target, options=CLIENT_OPTIONS)
            self._stub = self.stub_class(self._channel)

    async def stop(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def call(self, rpc: Callable[[Stub], Any], request: Message, *, time_remaining: float | None = None) -> Any:
        """``rpc(stub)(request)`` within the deadline, as this service; raises NotFound / Unavailable."""
        if self._stub is None:
            raise Unavailable(f"{self._lookup} is not started", reason=self._unavailable)
        method = rpc(self._stub)
        budget = self.deadline_s if time_remaining is None else max(0.0, min(self.deadline_s, time_remaining))
        deadline = time.monotonic() + budget
        backoff = self._initial_backoff
        attempts = 0
        last = grpc.StatusCode.DEADLINE_EXCEEDED
        while True:
            left = deadline - time.monotonic()
            if left < MIN_ATTEMPT_S:
                break
            attempts += 1
            try:
                metadata = self._tokens.metadata()
            except ServiceTokenError as exc:
                self._log.error(f"no service token for the {self._lookup}", error=str(exc))
                raise Unavailable(f"{self._lookup} is not possible", reason="SERVICE_TOKEN_UNAVAILABLE") from exc
            try:
                return await _traced(method, request, left, metadata)
            except grpc.aio.AioRpcError as exc:
                last = exc.code()
                if last == grpc.StatusCode.NOT_FOUND:
                    raise self.not_found() from None
                if last != grpc.StatusCode.UNAVAILABLE:
                    break  # DEADLINE_EXCEEDED or a refusal: retrying cannot help
            sleep = min(backoff * random.uniform(0.5, 1.0), deadline - time.monotonic() - MIN_ATTEMPT_S)
            if sleep <= 0:
                break
            await asyncio.sleep(sleep)
            backoff = min(backoff * 2, self._max_backoff)
        self._log.warning(f"{self._lookup} failed", code=last.name, attempts=attempts, budget_s=round(budget, 3))
        raise self.unavailable(last)

    def not_found(self) -> NotFound:
        """What an answer of NOT_FOUND becomes (``CUSTOMER_NOT_FOUND`` for the customer service)."""
        return NotFound(f"{self._capability} not found", reason=f"{self._capability.upper()}_NOT_FOUND")

    def unavailable(self, code: grpc.StatusCode) -> Unavailable:
        """What a call that could not be answered becomes (``upstream_code``: the last status)."""
        return Unavailable(
            f"the {self._capability} service is unavailable; retry later",
            reason=self._unavailable,
            metadata={"upstream_code": code.name},
        )


async def _traced(method: Any, request: Message, timeout: float, metadata: tuple[tuple[str, str], ...]) -> Any:
    """One attempt in a CLIENT span, its context injected into the call's metadata.

    When nothing exports spans (ADR 0030) the attempt carries the ids such a span would have
    (:func:`~services.kit.telemetry.id_only_span`): the callee continues the same trace, and no
    span is built, filled and dropped for nobody."""
    carrier: dict[str, str] = {}
    if not spans_read():
        propagate.inject(carrier, context=trace.set_span_in_context(id_only_span(None)))
        return await method(request, timeout=timeout, metadata=(*metadata, *carrier.items()))
    full = method._method.decode() if isinstance(method._method, bytes) else str(method._method)
    service, _, name = full.lstrip("/").partition("/")
    attributes: dict[str, str | int] = {
        "rpc.system": "grpc",
        "rpc.grpc.status_code": 0,
        "rpc.method": name,
        "rpc.service": service,
    }
    with _tracer.start_as_current_span(full, kind=SpanKind.CLIENT, attributes=attributes) as span:
        propagate.inject(carrier)
        try:
            return await method(request, timeout=timeout, metadata=(*metadata, *carrier.items()))
        except grpc.aio.AioRpcError as exc:
            span.set_attribute("rpc.grpc.status_code", exc.code().value[0])
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc.details()}"))
            raise


def capability_of(stub_class: Callable[..., Any]) -> str:
    """``CustomerServiceStub`` → ``customer``, ``CustomerViewServiceStub`` → ``customer_view``."""
    name = getattr(stub_class, "__name__", "")
    base = name.removesuffix("Stub").removesuffix("Service") or "upstream"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


class CallerSettings(ServiceSettings):
    """Settings of a service that calls others as itself (``ZT_SERVICE_*``).

    A subclass declares its defaults for ``service_client_id`` (``zhongtai-product``) and
    ``service_token_scopes`` (``customers:read``): both are required.
    """

    #: The service's own client id and scopes when it calls other services.
    service_client_id: str = ""
    service_token_scopes: str = ""
    #: prod: a token file kept fresh by the platform (client-credentials grant); dev/test sign.
    service_token_file: Path | None = None
    service_token_ttl_s: int = Field(300, ge=30, le=3600)

    @field_validator("service_token_scopes")
    @classmethod
    def _known_scopes(cls, value: str) -> str:
        return " ".join(parse_scopes(value))

    @model_validator(mode="after")
    def _identity_and_prod_token_file(self) -> CallerSettings:
        if not self.service_client_id:
            raise ValueError("ZT_SERVICE_CLIENT_ID is required (the service's own client id)")
        if not self.service_token_scopes:
            raise ValueError("ZT_SERVICE_TOKEN_SCOPES: at least one scope is required")
        if self.environment == "prod" and self.service_token_file is None:
            raise ValueError("ZT_SERVICE_TOKEN_FILE is required when ZT_ENVIRONMENT=prod")
        return self

    def service_tokens(self) -> ServiceTokenProvider:
        """The provider of this service's own token: the token file when set, else the dev signer."""
        secret = self.auth_hs256_secret.get_secret_value() if self.auth_hs256_secret else None
        return service_token_provider(
            environment=self.environment,
            client_id=self.service_client_id,
            scopes=self.service_token_scopes.split(),
            hs256_secret=secret,
            token_file=self.service_token_file,
            issuer=self.auth_issuer,
            audience=self.auth_audience,
            ttl_s=self.service_token_ttl_s,
        )

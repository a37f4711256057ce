"""The customer lookup: ``CustomerService.GetEligibilityProfile`` over gRPC.

- One long-lived channel (``services.kit.client_channel``: keepalive, OpenTelemetry client
  interceptors, so the trace travels in the call metadata), opened in ``start()`` inside the
  event loop and closed in ``stop()``.
- Every call has a deadline: the configured one (``ZT_CUSTOMER_DEADLINE_S``), shortened to
  what is left of the incoming call's own deadline.
- It retries only UNAVAILABLE (the lookup is a read, so retrying is safe), with jittered
  exponential backoff, and only while the deadline lasts.
- It calls as the product service itself: the bearer token comes from
  :mod:`services.kit.service_auth` (``customers:read``), never from the end user.
- A customer service that is down or too slow becomes :class:`Unavailable` (503 at the edge);
  an unknown customer becomes :class:`NotFound`. Nothing here yields INTERNAL.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC

import grpc

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.kit.errors import NotFound, Unavailable
from services.kit.grpc_server import client_channel
from services.kit.logging import get_logger
from services.kit.service_auth import ServiceTokenError, ServiceTokenProvider
from services.product.domain import CustomerProfile

log = get_logger("zhongtai.product.customers")

#: Below this much time left a call cannot succeed; give up instead of sending it.
MIN_ATTEMPT_S = 0.005


class CustomerDirectory:
    """Eligibility profiles from the customer service; ``start()``/``stop()`` own the channel."""

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
        self._deadline_s = deadline_s
        self._initial_backoff = initial_backoff_s
        self._max_backoff = max_backoff_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: customer_pb2_grpc.CustomerServiceStub | None = None

    async def start(self) -> None:
        if self._channel is None:
            self._channel = client_channel(self._target)
            self._stub = customer_pb2_grpc.CustomerServiceStub(self._channel)

    async def stop(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def profile(self, customer_id: str, *, time_remaining: float | None = None) -> CustomerProfile:
        """The customer's eligibility facts, within the deadline; raises NotFound / Unavailable."""
        if self._stub is None:
            raise Unavailable("customer lookup is not started", reason="CUSTOMER_SERVICE_UNAVAILABLE")
        budget = self._deadline_s if time_remaining is None else max(0.0, min(self._deadline_s, time_remaining))
        deadline = time.monotonic() + budget
        request = customer_pb2.GetEligibilityProfileRequest(customer_id=customer_id)
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
                log.error("no service token for the customer lookup", error=str(exc))
                raise Unavailable("customer lookup is not possible", reason="SERVICE_TOKEN_UNAVAILABLE") from exc
            try:
                reply = await self._stub.GetEligibilityProfile(request, timeout=left, metadata=metadata)
                return _profile(reply)
            except grpc.aio.AioRpcError as exc:
                last = exc.code()
                if last == grpc.StatusCode.NOT_FOUND:
                    raise NotFound("customer not found", reason="CUSTOMER_NOT_FOUND") from None
                if last != grpc.StatusCode.UNAVAILABLE:
                    break  # DEADLINE_EXCEEDED or a refusal: retrying cannot help
            sleep = min(backoff * random.uniform(0.5, 1.0), deadline - time.monotonic() - MIN_ATTEMPT_S)
            if sleep <= 0:
                break
            await asyncio.sleep(sleep)
            backoff = min(backoff * 2, self._max_backoff)
        log.warning("customer lookup failed", code=last.name, attempts=attempts, budget_s=round(budget, 3))
        raise Unavailable(
            "the customer service is unavailable; retry later",
            reason="CUSTOMER_SERVICE_UNAVAILABLE",
            metadata={"upstream_code": last.name},
        )


def _profile(reply: customer_pb2.EligibilityProfile) -> CustomerProfile:
    expires = (
        reply.risk_tolerance_expire_time.ToDatetime(tzinfo=UTC)
        if reply.HasField("risk_tolerance_expire_time")
        else None
    )
    return CustomerProfile(
        customer_id=reply.customer_id,
        status=int(reply.status),
        kyc_verified=reply.kyc_verified,
        age_years=int(reply.age_years),
        risk_tolerance=int(reply.risk_tolerance),
        risk_tolerance_expire_time=expires,
    )

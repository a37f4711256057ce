"""The customer lookup: ``CustomerService.GetEligibilityProfile`` over gRPC.

A thin layer on the kit's :class:`services.kit.clients.ServiceClient`, which owns the plumbing:
one long-lived channel opened in ``start()`` and closed in ``stop()``; a deadline
(``ZT_CUSTOMER_DEADLINE_S``) shortened to what is left of the incoming call's own; retries of
UNAVAILABLE only (the lookup is a read), jittered, within the deadline; the product service's
own token (``customers:read``), never the end user's. A customer service that is down or too
slow becomes :class:`Unavailable` (``CUSTOMER_SERVICE_UNAVAILABLE``, 503 at the edge); an
unknown customer becomes :class:`NotFound` (``CUSTOMER_NOT_FOUND``). Nothing here yields
INTERNAL. What is the product's own: the request and the :class:`CustomerProfile` it reads.
"""

from __future__ import annotations

from datetime import UTC

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.kit import ServiceClient
from services.product.domain import CustomerProfile


class CustomerDirectory(ServiceClient[customer_pb2_grpc.CustomerServiceStub]):
    """Eligibility profiles from the customer service; ``start()``/``stop()`` own the channel.

    ``CustomerDirectory(target, tokens, deadline_s=..., initial_backoff_s=..., max_backoff_s=...)``.
    """

    stub_class = customer_pb2_grpc.CustomerServiceStub

    async def profile(self, customer_id: str, *, time_remaining: float | None = None) -> CustomerProfile:
        """The customer's eligibility facts, within the deadline; raises NotFound / Unavailable."""
        reply = await self.call(
            lambda stub: stub.GetEligibilityProfile,
            customer_pb2.GetEligibilityProfileRequest(customer_id=customer_id),
            time_remaining=time_remaining,
        )
        return _profile(reply)


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

"""Whether a customer exists, asked of the system of record (``CustomerService`` over gRPC).

The hub only knows customers whose events reached it. When it has no view for an id it asks the
customer service, to tell "not built yet" from "no such customer" (ADR 0008). It calls
``GetEligibilityProfile``: the cheapest customer read its token (``customers:read``) may call,
and PII-free — the hub never sees a name or an ID number; it keeps nothing of the answer but
"exists". The plumbing (channel, deadline, UNAVAILABLE-only retries, own token, error names) is
the kit's :class:`services.kit.clients.ServiceClient`.
"""

from __future__ import annotations

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.kit import NotFound, ServiceClient


class KnownCustomers(ServiceClient[customer_pb2_grpc.CustomerServiceStub]):
    """``exists(customer_id)``; ``start()``/``stop()`` own the channel to the customer service.

    ``KnownCustomers(target, tokens, deadline_s=ZT_DATAHUB_CUSTOMER_DEADLINE_S)``.
    """

    stub_class = customer_pb2_grpc.CustomerServiceStub

    async def exists(self, customer_id: str, *, time_remaining: float | None = None) -> bool:
        """True/False from the customer service; raises Unavailable when it cannot say."""
        try:
            await self.call(
                lambda stub: stub.GetEligibilityProfile,
                customer_pb2.GetEligibilityProfileRequest(customer_id=customer_id),
                time_remaining=time_remaining,
            )
        except NotFound:
            return False
        return True

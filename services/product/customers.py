"""The customer lookup: ``CustomerService.GetEligibilityProfile`` over gRPC.

A thin layer on the kit's :class:`services.kit.clients.ServiceClient`, which owns the plumbing:
one long-lived channel opened in ``start()`` and closed in ``stop()``; a deadline
(``ZT_CUSTOMER_DEADLINE_S``) shortened to what is left of the incoming call's own; retries of
UNAVAILABLE only (the lookup is a read), jittered, within the deadline; the product service's
own token (``customers:read``), never the end user's. A customer service that is down or too
slow becomes :class:`Unavailable` (``CUSTOMER_SERVICE_UNAVAILABLE``, 503 at the edge); an
unknown customer becomes :class:`NotFound` (``CUSTOMER_NOT_FOUND``). Nothing here yields
INTERNAL. What is the product's own: the request and the :class:`CustomerProfile` it reads.

Lookups that wait at the same time go together (ADR 0058): at most ``lookups_in_flight`` calls
are out at once; a lookup asked while they are out waits, and when one comes back every lookup
then waiting goes in ONE call (``BatchGetEligibilityProfiles``; a single one as
``GetEligibilityProfile``, as when nothing waits). Each lookup keeps its own deadline and its
own answer (CUSTOMER_NOT_FOUND names only the unknown customer); a batch the customer service
cannot answer fails each of its lookups as a single call would. The batch call's trace is the
first waiting lookup's.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import grpc

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.kit import ServiceClient
from services.product.domain import CustomerProfile

#: Customers in one batch call at most (the RPC's own limit).
MAX_BATCH = 100


@dataclass
class _Waiting:
    """The lookups of one customer waiting for the next call."""

    futures: list[asyncio.Future[CustomerProfile]] = field(default_factory=list)
    deadline: float = 0.0  # (monotonic: the latest of theirs)


class CustomerDirectory(ServiceClient[customer_pb2_grpc.CustomerServiceStub]):
    """Eligibility profiles from the customer service; ``start()``/``stop()`` own the channel.

    ``CustomerDirectory(target, tokens, deadline_s=..., initial_backoff_s=..., max_backoff_s=...,
    lookups_in_flight=...)``.
    """

    stub_class = customer_pb2_grpc.CustomerServiceStub

    def __init__(self, target: str, tokens: Any, *, lookups_in_flight: int = 2, **options: float) -> None:
        super().__init__(target, tokens, **options)
        self._max_in_flight = max(1, lookups_in_flight)
        self._in_flight = 0
        self._waiting: dict[str, _Waiting] = {}
        self._first_context: contextvars.Context | None = None  # (the first waiting lookup's)
        self._batches: set[asyncio.Task[None]] = set()

    async def profile(self, customer_id: str, *, time_remaining: float | None = None) -> CustomerProfile:
        """The customer's eligibility facts, within the deadline; raises NotFound / Unavailable."""
        if self._in_flight < self._max_in_flight and not self._waiting:
            self._in_flight += 1
            try:
                return await self._one(customer_id, time_remaining)
            finally:
                self._in_flight -= 1
                self._send_waiting()
        budget = self.deadline_s if time_remaining is None else max(0.0, min(self.deadline_s, time_remaining))
        future: asyncio.Future[CustomerProfile] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(customer_id, _Waiting())
        waiting.futures.append(future)
        waiting.deadline = max(waiting.deadline, time.monotonic() + budget)
        if self._first_context is None:
            self._first_context = contextvars.copy_context()
        self._send_waiting()
        try:
            return await asyncio.wait_for(future, budget)
        except TimeoutError:
            raise self.unavailable(grpc.StatusCode.DEADLINE_EXCEEDED) from None

    async def _one(self, customer_id: str, time_remaining: float | None) -> CustomerProfile:
        reply = await self.call(
            lambda stub: stub.GetEligibilityProfile,
            customer_pb2.GetEligibilityProfileRequest(customer_id=customer_id),
            time_remaining=time_remaining,
        )
        return _profile(reply)

    def _send_waiting(self) -> None:
        """Send what waits in one call, if a call may go out now."""
        if self._in_flight >= self._max_in_flight or not self._waiting:
            return
        batch: dict[str, _Waiting] = {}
        for customer_id in list(self._waiting):
            waiting = self._waiting.pop(customer_id)
            if any(not f.done() for f in waiting.futures):  # (a lookup that gave up is not asked for)
                batch[customer_id] = waiting
            if len(batch) == MAX_BATCH:
                break
        context, self._first_context = self._first_context, None
        if self._waiting:
            self._first_context = contextvars.copy_context()
        if not batch:
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._answer(batch), context=context)
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _answer(self, batch: dict[str, _Waiting]) -> None:
        """One call for the ``batch``; each of its lookups gets its own answer or error."""
        try:
            left = max(w.deadline for w in batch.values()) - time.monotonic()
            found: dict[str, CustomerProfile | BaseException] = {}
            try:
                if len(batch) == 1:
                    (customer_id,) = batch
                    found[customer_id] = await self._one(customer_id, left)
                else:
                    found.update(await self._many(list(batch), left))
            except Exception as exc:  # (NotFound of a single one; Unavailable of all)
                found = dict.fromkeys(batch, exc)
            for customer_id, waiting in batch.items():
                answer = found.get(customer_id) or self.not_found()
                for future in waiting.futures:
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            self._in_flight -= 1
            self._send_waiting()

    async def _many(self, customer_ids: list[str], time_remaining: float) -> dict[str, CustomerProfile]:
        reply = await self.call(
            lambda stub: stub.BatchGetEligibilityProfiles,
            customer_pb2.BatchGetEligibilityProfilesRequest(customer_ids=customer_ids),
            time_remaining=time_remaining,
        )
        return _profiles(reply)


def _profiles(reply: customer_pb2.BatchGetEligibilityProfilesResponse) -> dict[str, CustomerProfile]:
    """The profiles of a batch by customer id (a customer not among them does not exist)."""
    return {p.customer_id: _profile(p) for p in reply.profiles}


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

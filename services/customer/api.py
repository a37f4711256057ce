"""The gRPC servicer of bank.customer.v1.CustomerService: request → use case → masked response.

No business rules here. The kit's per-call wrapper has already authenticated the caller, checked
the method's ``required_scopes`` and run protovalidate; this layer converts messages, maps
domain errors to the kit's error classes (one place: :func:`domain_errors`), masks every
response with the contract-driven :func:`services.kit.masking.mask_message` unless the caller
holds ``pii:read``, and audits each unmasked read before answering.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.customer import domain, mapping
from services.customer.audit import AuditEntry
from services.customer.service import CustomerService
from services.kit import (
    PII_READ_SCOPE,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    current_principal,
    mask_message,
)

Outcome = customer_pb2.VerifyCustomerRequest.Outcome


@contextmanager
def domain_errors(prefix: str = "") -> Iterator[None]:
    """Domain errors → INVALID_ARGUMENT (field paths of the request) / FAILED_PRECONDITION."""
    try:
        yield
    except domain.ValidationFailed as exc:
        violations = [FieldViolation(prefix + v.field, v.description, v.reason) for v in exc.violations]
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(f"invalid request: {summary}", reason="INVALID_FIELDS", violations=violations) from None
    except domain.IllegalTransition as exc:
        raise FailedPrecondition(str(exc), reason=exc.reason) from None


def personal_from(message: customer_pb2.Customer) -> domain.PersonalData:
    born = mapping.from_proto_date(message.birth_date)
    if born is None:
        raise domain.ValidationFailed([domain.Violation("birth_date", "is not a calendar date", "BIRTH_DATE_CALENDAR")])
    return domain.PersonalData(
        full_name=message.full_name,
        birth_date=born,
        national_id=message.national_id,
        mobile=message.mobile,
        email=message.email,
    )


def _changes(request: customer_pb2.UpdateCustomerRequest) -> dict[str, object]:
    changes: dict[str, object] = {}
    for path in request.update_mask.paths:
        if path == "birth_date":
            born = mapping.from_proto_date(request.customer.birth_date)
            if born is None:
                raise domain.ValidationFailed(
                    [domain.Violation("birth_date", "is not a calendar date", "BIRTH_DATE_CALENDAR")]
                )
            changes[path] = born
        else:  # protovalidate allows only full_name, birth_date, mobile, email
            changes[path] = getattr(request.customer, path)
    if not changes:
        raise InvalidArgument(
            "update_mask must name at least one field",
            reason="INVALID_FIELDS",
            violations=[FieldViolation("update_mask", "must name one of full_name, birth_date, mobile, email")],
        )
    return changes


def _trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


class CustomerApi(customer_pb2_grpc.CustomerServiceServicer):
    """Thin adapter over :class:`CustomerService`."""

    def __init__(self, service: CustomerService) -> None:
        self._service = service

    async def _respond(self, messages: Sequence[customer_pb2.Customer], method: str) -> list[customer_pb2.Customer]:
        """The resources (in clear) masked, unless the caller holds pii:read; then every clear
        read is audited first — a write's answer and its replay alike."""
        principal = current_principal.get()
        reveal = principal is not None and principal.has(PII_READ_SCOPE)
        entries = []
        now = self._service.clock.now()
        for message in messages:
            revealed = mask_message(message, reveal_pii=reveal)
            if revealed and principal is not None:
                entries.append(
                    AuditEntry(principal.client_id, message.customer_id, tuple(revealed), method, _trace_id(), now)
                )
        await self._service.record_reads(entries)
        return list(messages)

    async def _one(self, message: customer_pb2.Customer, method: str) -> customer_pb2.Customer:
        return (await self._respond([message], method))[0]

    async def CreateCustomer(self, request: customer_pb2.CreateCustomerRequest, context: Any) -> customer_pb2.Customer:
        with domain_errors(prefix="customer."):
            personal = personal_from(request.customer)
            customer = await self._service.create(personal, request=request)
        return await self._one(customer, "CreateCustomer")

    async def GetCustomer(self, request: customer_pb2.GetCustomerRequest, context: Any) -> customer_pb2.Customer:
        return await self._one(mapping.to_proto(await self._service.get(request.customer_id)), "GetCustomer")

    async def UpdateCustomer(self, request: customer_pb2.UpdateCustomerRequest, context: Any) -> customer_pb2.Customer:
        with domain_errors(prefix="customer."):
            customer = await self._service.update(
                request.customer.customer_id,
                _changes(request),
                etag=request.customer.etag,
                request=request,
            )
        return await self._one(customer, "UpdateCustomer")

    async def ListCustomers(
        self, request: customer_pb2.ListCustomersRequest, context: Any
    ) -> customer_pb2.ListCustomersResponse:
        customers, token = await self._service.list(
            status=domain.Status(request.status) if request.status else None,
            kyc_verified=request.kyc_verified if request.HasField("kyc_verified") else None,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        messages = await self._respond([mapping.to_proto(c) for c in customers], "ListCustomers")
        return customer_pb2.ListCustomersResponse(customers=messages, next_page_token=token)

    async def VerifyCustomer(self, request: customer_pb2.VerifyCustomerRequest, context: Any) -> customer_pb2.Customer:
        with domain_errors():
            customer = await self._service.verify(
                request.customer_id,
                approve=request.outcome == customer_pb2.VerifyCustomerRequest.OUTCOME_APPROVED,
                reason=request.reason,
                etag=request.etag,
                request=request,
            )
        return await self._one(customer, "VerifyCustomer")

    async def AssessRisk(self, request: customer_pb2.AssessRiskRequest, context: Any) -> customer_pb2.Customer:
        with domain_errors():
            customer = await self._service.assess_risk(
                request.customer_id,
                request.questionnaire_score,
                etag=request.etag,
                request=request,
            )
        return await self._one(customer, "AssessRisk")

    async def CloseCustomer(self, request: customer_pb2.CloseCustomerRequest, context: Any) -> customer_pb2.Customer:
        with domain_errors():
            customer = await self._service.close(
                request.customer_id, reason=request.reason, etag=request.etag, request=request
            )
        return await self._one(customer, "CloseCustomer")

    async def GetEligibilityProfile(
        self, request: customer_pb2.GetEligibilityProfileRequest, context: Any
    ) -> customer_pb2.EligibilityProfile:
        facts = await self._service.eligibility(request.customer_id)
        return mapping.eligibility_profile(facts, today=self._service.clock.today())

    async def BatchGetEligibilityProfiles(
        self, request: customer_pb2.BatchGetEligibilityProfilesRequest, context: Any
    ) -> customer_pb2.BatchGetEligibilityProfilesResponse:
        asked = list(request.customer_ids)
        found = await self._service.eligibilities(asked)
        today = self._service.clock.today()
        return customer_pb2.BatchGetEligibilityProfilesResponse(
            profiles=[mapping.eligibility_profile(facts, today=today) for facts in found.values()],
            missing_customer_ids=[customer_id for customer_id in asked if customer_id not in found],
        )

"""The customer service's writes on the kit's command port (ADR 0013): a replay answers with the
first response — not a re-read —, masked for the caller who asks, its clear reads audited; the
stored response is sealed with the PII cipher and its fingerprint keyed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bank.customer.v1 import customer_pb2
from tests.integration.customer.conftest import PII_READER, WRITER, Client, RunningService, failure, person

Customer = customer_pb2.Customer


@pytest.fixture
async def db(customer_service: RunningService) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(customer_service.database_url)
    yield engine
    await engine.dispose()


async def test_a_replayed_create_answers_the_first_response_even_after_later_changes(client: Client) -> None:
    who = person()
    request = customer_pb2.CreateCustomerRequest(customer=who.message(), request_id=f"cmd-create-{who.mobile}")
    first = await client.stub.CreateCustomer(request, metadata=WRITER, timeout=10)
    verified = await client.verify(first.customer_id)
    assert verified.version == 2

    again = await client.stub.CreateCustomer(request, metadata=WRITER, timeout=10)
    assert again == first  # version 1, PENDING, the first etag: what the first call answered
    assert again.status == Customer.STATUS_PENDING and again.version == 1


async def test_a_replay_is_masked_for_its_caller_and_audited_when_clear(client: Client, db: AsyncEngine) -> None:
    who = person()
    request = customer_pb2.CreateCustomerRequest(customer=who.message(), request_id=f"cmd-mask-{who.mobile}")
    masked = await client.stub.CreateCustomer(request, metadata=WRITER, timeout=10)
    assert masked.national_id != who.national_id  # the writer holds no pii:read

    clear = await client.stub.CreateCustomer(request, metadata=PII_READER, timeout=10)
    assert clear.customer_id == masked.customer_id and clear.national_id == who.national_id
    async with db.connect() as conn:
        methods = (
            (
                await conn.execute(
                    text("SELECT method FROM pii_audit_log WHERE customer_id = :c"), {"c": masked.customer_id}
                )
            )
            .scalars()
            .all()
        )
    assert methods == ["CreateCustomer"]  # the replay revealed PII: audited like any clear read


async def test_the_stored_response_holds_no_clear_pii(client: Client, db: AsyncEngine) -> None:
    who = person()
    request_id = f"cmd-sealed-{who.mobile}"
    await client.create(who, request_id=request_id)
    async with db.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT key, fingerprint, response FROM idempotency_keys WHERE key = :k"),
                {"k": f"CreateCustomer:{request_id}"},
            )
        ).one()
    stored = bytes(row.response)
    for clear in (who.national_id, who.mobile, who.email, who.full_name):
        assert clear.encode() not in stored
    assert len(row.fingerprint) == 64  # a keyed HMAC, not a digest anyone could recompute


async def test_a_request_id_is_scoped_to_its_method_and_refused_for_another_request(client: Client) -> None:
    c = await client.active()
    request_id = f"cmd-scope-{c.customer_id}"
    close = customer_pb2.CloseCustomerRequest(customer_id=c.customer_id, reason="moved abroad", request_id=request_id)
    closed = await client.stub.CloseCustomer(close, metadata=WRITER, timeout=10)
    assert closed.status == Customer.STATUS_CLOSED
    assert await client.stub.CloseCustomer(close, metadata=WRITER, timeout=10) == closed  # replayed, not refused

    close.reason = "another reason"
    err = await failure(client.stub.CloseCustomer(close, metadata=WRITER, timeout=10))
    assert err.code == grpc.StatusCode.ALREADY_EXISTS and err.reason == "REQUEST_ID_REUSED"
    assert "request_id" in err.fields

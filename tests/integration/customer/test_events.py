"""Exactly one event per state change reaches Kafka, in order, carrying no raw PII."""

from __future__ import annotations

import re
import time
import uuid

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from google.protobuf import field_mask_pb2

from bank.customer.v1 import customer_pb2, events_pb2
from services.kit.events import TOPIC_CUSTOMER, parse_record
from tests.integration.customer.conftest import WRITER, Client, Person, RunningService, person


async def events_for(bootstrap: str, customer_id: str, expected: int, *, settle_s: float = 1.5) -> list[ConsumerRecord]:
    """Every record keyed by the customer, waiting for ``expected`` and then ``settle_s`` more for extras."""
    consumer = AIOKafkaConsumer(
        TOPIC_CUSTOMER,
        bootstrap_servers=bootstrap,
        group_id=f"t-customer-events-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + 30
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found += [r for r in records if r.key == customer_id.encode()]
            if settle_until is None and len(found) >= expected:
                settle_until = time.monotonic() + settle_s
    finally:
        await consumer.stop()
    return found


def assert_no_clear_pii(record: ConsumerRecord, who: Person) -> None:
    blob = (record.value or b"") + b"".join(k.encode() + v for k, v in record.headers)
    for secret in (who.national_id, who.mobile, who.email, who.full_name, who.born.isoformat(),
                   who.born.strftime("%Y%m%d")):  # fmt: skip
        assert secret.encode() not in blob, f"clear PII in {record.headers}"


async def test_one_event_per_state_change_in_order_without_pii(
    client: Client, customer_service: RunningService
) -> None:
    who = person()
    created = await client.create(who, request_id=f"evt-{who.mobile}")
    await client.create(who, request_id=f"evt-{who.mobile}")  # idempotent replay: no event
    update = customer_pb2.UpdateCustomerRequest(
        customer=customer_pb2.Customer(customer_id=created.customer_id, mobile="18600001234"),
        update_mask=field_mask_pb2.FieldMask(paths=["mobile"]),
    )
    await client.stub.UpdateCustomer(update, metadata=WRITER, timeout=10)
    await client.stub.UpdateCustomer(update, metadata=WRITER, timeout=10)  # no change: no event
    await client.verify(created.customer_id)
    await client.assess(created.customer_id, 72)
    await client.close(created.customer_id, reason="moving abroad")

    records = await events_for(customer_service.env["ZT_KAFKA_BOOTSTRAP_SERVERS"], created.customer_id, 5)
    events = [parse_record(list(r.headers), r.value, key=r.key) for r in records]
    assert [e.type for e in events] == [
        "bank.customer.v1.CustomerCreated",
        "bank.customer.v1.CustomerUpdated",
        "bank.customer.v1.CustomerVerified",
        "bank.customer.v1.CustomerRiskAssessed",
        "bank.customer.v1.CustomerClosed",
    ]
    assert [e.version for e in events] == [1, 2, 3, 4, 5]
    assert [e.message.version for e in events] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
    assert len({r.partition for r in records}) == 1 and [r.offset for r in records] == sorted(r.offset for r in records)
    for record, event in zip(records, events, strict=True):
        assert_no_clear_pii(record, who)
        assert event.subject == created.customer_id and event.aggregate_id == created.customer_id
        snap = event.message.customer  # type: ignore[attr-defined]
        assert re.fullmatch(r"[0-9a-f]{64}", snap.national_id_blind_index)
        assert snap.national_id_masked == who.national_id[:6] + "********" + who.national_id[-4:]
        assert snap.birth_year == who.born.year and snap.version == event.version
    # the blind index is stable across events (identity joins without revealing the ID)
    assert len({e.message.customer.national_id_blind_index for e in events}) == 1  # type: ignore[attr-defined]

    updated, verified, assessed, closed = (e.message for e in events[1:])
    assert isinstance(updated, events_pb2.CustomerUpdated) and list(updated.changed_fields) == ["mobile"]
    assert updated.customer.mobile_masked == "186****1234"
    assert isinstance(verified, events_pb2.CustomerVerified) and verified.customer.kyc_verified
    assert isinstance(assessed, events_pb2.CustomerRiskAssessed) and assessed.customer.risk_tolerance == 4
    assert isinstance(closed, events_pb2.CustomerClosed) and closed.reason == "moving abroad"
    assert closed.customer.status == customer_pb2.Customer.STATUS_CLOSED


async def test_rejection_is_an_event_and_failed_commands_are_not(
    client: Client, customer_service: RunningService
) -> None:
    who = person(age=10)
    created = await client.create(who)
    for _ in range(2):  # refused: under age -> no state change, no event
        with pytest.raises(grpc.aio.AioRpcError):
            await client.verify(created.customer_id)
    await client.verify(created.customer_id, approve=False, reason=f"minor; called {who.mobile}")
    records = await events_for(customer_service.env["ZT_KAFKA_BOOTSTRAP_SERVERS"], created.customer_id, 2)
    events = [parse_record(list(r.headers), r.value, key=r.key) for r in records]
    assert [e.type.rsplit(".", 1)[1] for e in events] == ["CustomerCreated", "CustomerRejected"]
    # a free-text reason is scrubbed of PII-shaped values before it enters an event
    assert "[MOBILE]" in events[1].message.reason  # type: ignore[attr-defined]
    for record in records:
        assert_no_clear_pii(record, who)

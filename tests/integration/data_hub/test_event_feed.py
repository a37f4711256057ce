"""The customer's event feed and the hub's outbox status on real Kafka and PostgreSQL.

``ListCustomerEvents`` (views:read): every event about the customer on the customer and
subscription topics, newest first, paged, each once however often it is delivered; product
catalogue events are not in it. ``GetOutboxStatus`` (ops:admin) answers the hub's view publish
backlog in the shape every capability answers.
"""

from __future__ import annotations

import collections
import dataclasses
import uuid
from types import SimpleNamespace

import grpc
import pytest

from bank.api.v1 import outbox_pb2
from bank.datahub.v1 import datahub_pb2, operations_pb2_grpc
from devtools.synth import Synth, produce
from services.cli import DEV_SECRET
from services.data_hub.config import TOPIC_CUSTOMER, TOPIC_SUBSCRIPTION
from services.data_hub.event_log import FEED_COLUMNS, row_of
from services.kit import as_dicts
from services.kit.auth import mint_token
from services.kit.events import KafkaRecord
from tests.integration.data_hub.conftest import META, hub, namespace, send, stub, wait_until

OPS = (("authorization", f"Bearer {mint_token(DEV_SECRET, ['ops:admin'], client_id='ops-tests')}"),)


async def _feed(views, customer_id: str, size: int = 3) -> list[datahub_pb2.CustomerEvent]:  # type: ignore[no-untyped-def]
    events: list[datahub_pb2.CustomerEvent] = []
    token = ""
    while True:
        page = await views.ListCustomerEvents(
            datahub_pb2.ListCustomerEventsRequest(customer_id=customer_id, page_size=size, page_token=token),
            metadata=META,
            timeout=5,
        )
        assert len(page.events) <= size
        events.extend(page.events)
        if not (token := page.next_page_token):
            return events


def _undecodable(records: list[KafkaRecord], customer_id: str) -> KafkaRecord:
    """A new event about the customer on the customer topic whose payload never decodes."""
    base = next(
        r for r in records if r.topic == TOPIC_CUSTOMER and dict(r.headers)["ce_subject"] == customer_id.encode()
    )
    event_id = uuid.uuid4().hex
    headers = [(k, event_id.encode() if k == "ce_id" else v) for k, v in base.headers]
    return dataclasses.replace(base, value=b"\xff\xfe not a protobuf", headers=headers, event_id=event_id)


async def _refused(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value.code(), failed.value.details() or ""


@pytest.mark.timeout(240)
async def test_the_feed_lists_each_event_about_the_customer_once_newest_first(kafka_server, pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bootstrap, ns = kafka_server.bootstrap_servers, namespace()
    events = Synth(seed=11, customers=6, months=3, prefix=f"f{uuid.uuid4().hex[:6]}", txn_scale=0.3).events()
    records = [e.record() for e in events]
    expected: dict[str, set[str]] = collections.defaultdict(set)
    for r in records:
        row = row_of(SimpleNamespace(headers=r.headers, topic=r.topic, partition=0, offset=0))  # type: ignore[arg-type]
        if r.topic in (TOPIC_CUSTOMER, TOPIC_SUBSCRIPTION) and row is not None:
            (named,) = as_dicts(FEED_COLUMNS, [row])
            expected[named["customer_id"]].add(named["event_id"])
    proc = hub(pg_url, bootstrap, tmp_path, topic_prefix=ns).start(120)
    channel, views = stub(proc.target)
    try:
        await send(events, bootstrap, ns)
        await send(events[:5], bootstrap, ns)  # re-delivered: still once in the feed
        busiest = max(expected, key=lambda c: len(expected[c]))

        async def indexed() -> bool:
            return len(await _feed(views, busiest, size=200)) == len(expected[busiest])

        await wait_until(indexed, 90, "the busiest customer's events in the feed")
        for customer_id, ids in expected.items():
            feed = await _feed(views, customer_id)
            assert [e.event_id for e in feed if e.event_id in ids] == [e.event_id for e in feed]
            assert len(feed) == len({e.event_id for e in feed}) == len(ids), customer_id
            stamps = [(e.event_time.ToMicroseconds(), e.event_id) for e in feed]
            assert stamps == sorted(stamps, reverse=True)
        # Dead-lettered records are listed too (ADR 0062): one that never decodes (its payload is
        # garbage) goes to the dead letters at once, and is in the feed from its headers.
        undecodable = _undecodable(records, busiest)
        await produce(
            [dataclasses.replace(undecodable, topic=ns + undecodable.topic)], bootstrap, client_id="feed-test"
        )

        async def dead_listed() -> bool:
            return undecodable.event_id in {e.event_id for e in await _feed(views, busiest, size=200)}

        await wait_until(dead_listed, 60, "the dead-lettered record in the feed")
        expected[busiest].add(undecodable.event_id)
        assert len(await _feed(views, busiest, size=200)) == len(expected[busiest])
        types = {e.event_type.rsplit(".", 1)[-1] for e in await _feed(views, busiest, size=200)}
        assert {"CustomerCreated", "SubscriptionOpened", "TransactionPosted"} <= types
        assert not any(t.startswith("Product") for t in types)

        assert (await _feed(views, "nobody-" + uuid.uuid4().hex[:6])) == []
        bad = datahub_pb2.ListCustomerEventsRequest(customer_id=busiest, page_token="nope")
        code, _ = await _refused(views.ListCustomerEvents(bad, metadata=META, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        bad = datahub_pb2.ListCustomerEventsRequest(customer_id="bad id!", page_size=500)
        code, _ = await _refused(views.ListCustomerEvents(bad, metadata=META, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        ok = datahub_pb2.ListCustomerEventsRequest(customer_id=busiest)
        code, details = await _refused(views.ListCustomerEvents(ok, metadata=OPS, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "views:read" in details

        ops = operations_pb2_grpc.OperationsServiceStub(channel)
        status = await ops.GetOutboxStatus(outbox_pb2.GetOutboxStatusRequest(), metadata=OPS, timeout=5)
        assert status.capability == "data_hub" and status.backlog >= 0
        assert status.HasField("oldest_pending_time") == (status.backlog > 0)
        code, _ = await _refused(ops.GetOutboxStatus(outbox_pb2.GetOutboxStatusRequest(), metadata=META, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()
        proc.stop()

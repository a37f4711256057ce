"""Outbox → relay → Kafka on real PostgreSQL/SQLite and a real Apache Kafka broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from sqlalchemy import func, select

from bank.customer.v1 import events_pb2
from services.kit.db import UnitOfWork
from services.kit.events import TOPIC_CUSTOMER, parse_record
from services.kit.kafka import ensure_topics, make_producer
from services.kit.outbox import OutboxRelay, OutboxRow, add_event
from services.kit.telemetry import install_in_memory
from tests.support.topics import read_records

from .conftest import new_id

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
async def topics(kafka_server) -> str:  # type: ignore[no-untyped-def]
    await ensure_topics(kafka_server.bootstrap_servers)
    return kafka_server.bootstrap_servers


def payload(customer_id: str, version: int) -> events_pb2.CustomerCreated:
    event = events_pb2.CustomerCreated(customer_id=customer_id, version=version)
    event.customer.customer_id = customer_id
    event.customer.version = version
    return event


async def write_events(engine, customer_id: str, versions: range, **uow_kwargs) -> None:  # type: ignore[no-untyped-def]
    for version in versions:
        async with UnitOfWork(engine, **uow_kwargs) as uow:
            add_event(
                uow.session, payload(customer_id, version), source="/test", aggregate_type="customer",
                aggregate_id=customer_id, version=version,
            )  # fmt: skip
            await uow.commit()


async def read_topic(bootstrap: str, keys: set[str], expected: int, timeout: float = 30.0) -> list:  # type: ignore[type-arg]
    """Every record of the customer topic whose key is in ``keys``, in partition order."""
    return await read_records(
        bootstrap, TOPIC_CUSTOMER, expected, keep=lambda r: bool(r.key) and r.key.decode() in keys, timeout=timeout
    )


async def test_a_committed_event_reaches_kafka_with_cloudevents_headers_and_traceparent(kit_db, topics) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    memory = install_in_memory()
    relay = OutboxRelay(engine, make_producer(topics, client_id="t"), owns_producer=True, poll_interval_s=5)
    await relay.start()
    customer_id = new_id()
    try:
        with trace.get_tracer("test").start_as_current_span("request") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            await write_events(engine, customer_id, range(1, 2), after_commit=[relay.wake])
        records = await read_topic(topics, {customer_id}, 1)
    finally:
        await relay.stop()
    assert len(records) == 1
    headers = dict(records[0].headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"bank.customer.v1.CustomerCreated"
    assert headers["ce_source"] == b"/test"
    assert headers["ce_subject"] == customer_id.encode()
    assert headers["content-type"] == b"application/protobuf"
    assert headers["traceparent"].decode().split("-")[1] == trace_id
    event = parse_record(list(records[0].headers), records[0].value)
    assert event.message.customer_id == customer_id
    publish = [s for s in memory.spans.get_finished_spans() if s.name == "bank.customer.v1 publish"]
    assert any(format(s.context.trace_id, "032x") == trace_id for s in publish)  # a child of the request
    assert headers["traceparent"].decode().split("-")[2] in {format(s.context.span_id, "016x") for s in publish}


async def test_a_rolled_back_transaction_publishes_nothing(kit_db, topics) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    customer_id = new_id()
    with pytest.raises(RuntimeError):
        async with UnitOfWork(engine) as uow:
            add_event(uow.session, payload(customer_id, 1), source="/test", aggregate_type="customer",
                      aggregate_id=customer_id, version=1)  # fmt: skip
            raise RuntimeError("use case failed after staging its event")
    relay = OutboxRelay(engine, make_producer(topics, client_id="t"), owns_producer=True)
    await relay.start()
    try:
        assert await relay.publish_once() == 0
    finally:
        await relay.stop()
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(OutboxRow)) == 0
    assert await read_topic(topics, {customer_id}, 1, timeout=2) == []


def run_relay(url: str, bootstrap: str, mode: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "relay_main.py"), url, bootstrap, mode],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


async def wait_unpublished(engine, expected: int, timeout: float = 30) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
            )
        if count == expected:
            return count
        await asyncio.sleep(0.2)
    return count


async def test_relay_killed_after_commit_before_publish_loses_nothing(pg_kit_db, topics, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url, engine = pg_kit_db
    customer_id = new_id()
    await write_events(engine, customer_id, range(1, 6))
    crashed = run_relay(url, topics, "crash-before-send", tmp_path / "relay.log")
    assert crashed.wait(60) == -9  # SIGKILL, before any send
    assert await read_topic(topics, {customer_id}, 5, timeout=2) == []
    restarted = run_relay(url, topics, "normal", tmp_path / "relay.log")
    try:
        assert await wait_unpublished(engine, 0) == 0
        records = await read_topic(topics, {customer_id}, 5)
    finally:
        restarted.terminate()
        restarted.wait(30)
    versions = [parse_record(list(r.headers), r.value).version for r in records]
    assert versions == [1, 2, 3, 4, 5]


async def test_published_rows_are_purged_after_the_retention_and_pending_rows_are_kept(kit_db, topics) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    relay = OutboxRelay(engine, make_producer(topics, client_id="t"), owns_producer=True, retention_s=3600)
    await relay.start()
    try:
        await write_events(engine, new_id(), range(1, 4))
        relay.wake()
        assert await wait_unpublished(engine, 0) == 0
        await write_events(engine, new_id(), range(1, 3))  # not yet published when we purge
        await relay.stop()
        relay = OutboxRelay(engine, make_producer(topics, client_id="t2"), owns_producer=True, retention_s=0)
        assert await relay.purge_published() >= 3
        async with engine.connect() as conn:
            left = (await conn.execute(select(OutboxRow.published_at))).scalars().all()
        assert left and all(p is None for p in left)  # only the unpublished rows remain
    finally:
        await relay.stop()


WRITER = """
import asyncio, sys
sys.path[:0] = {path!r}
from bank.customer.v1 import events_pb2
from services.kit.db import UnitOfWork, create_engine
from services.kit.outbox import add_event

async def main():
    engine = create_engine({url!r})
    async with UnitOfWork(engine) as uow:  # no in-process relay to wake: only the NOTIFY can
        event = events_pb2.CustomerCreated(customer_id={customer_id!r}, version=1)
        event.customer.customer_id = {customer_id!r}
        add_event(uow.session, event, source="/test", aggregate_type="customer",
                  aggregate_id={customer_id!r}, version=1)
        await uow.commit()
    await engine.dispose()

asyncio.run(main())
"""


async def commit_in_another_process(url: str, customer_id: str) -> None:
    code = WRITER.format(path=sys.path, url=url, customer_id=customer_id)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await proc.wait() == 0


@pytest.mark.parametrize("listen", [True, False])
async def test_a_commit_in_another_process_wakes_the_relay_through_notify(pg_kit_db, topics, listen: bool) -> None:  # type: ignore[no-untyped-def]
    url, engine = pg_kit_db
    relay = OutboxRelay(
        engine, make_producer(topics, client_id="t"), owns_producer=True, poll_interval_s=60, listen=listen
    )
    await relay.start()
    try:
        if listen:
            await asyncio.wait_for(relay.listening.wait(), 30)
        await asyncio.sleep(1.0)  # the start-up rounds are over: only a wake-up can publish now
        customer_id = new_id()
        await commit_in_another_process(url, customer_id)
        if listen:
            assert await wait_unpublished(engine, 0, timeout=10) == 0
            assert len(await read_topic(topics, {customer_id}, 1)) == 1
        else:  # the control: without LISTEN the row waits for the (60 s) poll
            await asyncio.sleep(1.5)
            assert await wait_unpublished(engine, 1, timeout=1) == 1
    finally:
        await relay.stop()


async def test_a_notify_wake_waits_to_coalesce_commits_and_a_local_wake_does_not(pg_kit_db, topics) -> None:  # type: ignore[no-untyped-def]
    url, engine = pg_kit_db
    coalesce_s = 3.0
    relay = OutboxRelay(
        engine,
        make_producer(topics, client_id="t"),
        owns_producer=True,
        poll_interval_s=60,
        notify_coalesce_s=coalesce_s,
    )
    await relay.start()
    try:
        await asyncio.wait_for(relay.listening.wait(), 30)
        await asyncio.sleep(1.0)  # the start-up rounds are over: only a wake-up can publish now
        started = time.monotonic()
        await write_events(engine, new_id(), range(1, 2), after_commit=[relay.wake])
        assert await wait_unpublished(engine, 0, timeout=coalesce_s) == 0  # this process's commit: at once
        assert time.monotonic() - started < coalesce_s - 0.5
        # Another process's commit: timed from when its row is first seen (not from when that process
        # exits, which a loaded machine delays), it is held to gather more commits, then published.
        writer = asyncio.create_task(commit_in_another_process(url, new_id()))
        seen, published = await watch_one_row_published(engine, timeout=30)
        await writer
        assert published - seen >= coalesce_s - 1.0, published - seen
    finally:
        await relay.stop()


async def watch_one_row_published(engine, timeout: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """When one unpublished row was first seen, and when none was left (monotonic times)."""
    deadline = time.monotonic() + timeout
    seen: float | None = None
    async with engine.connect() as conn:
        while time.monotonic() < deadline:
            count = await conn.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
            )
            await conn.rollback()  # a fresh snapshot for the next look
            now = time.monotonic()
            if count and seen is None:
                seen = now
            elif not count and seen is not None:
                return seen, now
            await asyncio.sleep(0.05)
    raise AssertionError(f"the row was {'not seen' if seen is None else 'never published'} within {timeout} s")


async def test_overlapping_rounds_and_two_relays_keep_each_aggregates_order(pg_kit_db, topics) -> None:  # type: ignore[no-untyped-def]
    _, engine = pg_kit_db
    relays = [
        OutboxRelay(
            engine,
            make_producer(topics, client_id=f"t{i}"),
            owns_producer=True,
            name=f"r{i}",
            batch_size=7,
            max_in_flight=3,
            poll_interval_s=0.2,
        )
        for i in range(2)
    ]
    for relay in relays:
        await relay.start()
    customers = [new_id() for _ in range(3)]
    try:
        wake = [relay.wake for relay in relays]
        for version in range(1, 31):  # interleaved, each commit waking both relays
            await asyncio.gather(
                *(write_events(engine, c, range(version, version + 1), after_commit=wake) for c in customers)
            )
        assert await wait_unpublished(engine, 0) == 0
        records = await read_topic(topics, set(customers), 90)
    finally:
        for relay in relays:
            await relay.stop()
    by_customer: dict[str, list[int]] = {c: [] for c in customers}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_customer[record.key.decode()].append(parse_record(list(record.headers), record.value).version)
    assert all(versions == list(range(1, 31)) for versions in by_customer.values()), by_customer
    assert sum(relay.published_total for relay in relays) == 90

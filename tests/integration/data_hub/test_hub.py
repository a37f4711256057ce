"""The hub as a real process on real Kafka: events -> views, API, view topic, DLQ, rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaProducer

from bank.datahub.v1 import datahub_pb2
from bank.product.v1 import events_pb2 as pev
from bank.product.v1 import product_pb2
from devtools.synth import Synth
from services.data_hub import store
from services.kit.db import UnitOfWork, create_engine
from services.kit.events import TOPIC_CUSTOMER_VIEW, TOPIC_SUBSCRIPTION, build_record
from tests.support.procs import REPO, base_env
from tests.unit.data_hub import support

from .conftest import (
    META,
    caught_up,
    converge,
    docs_for,
    error_details,
    explain_diff,
    hub,
    namespace,
    read_all,
    send,
    stub,
    wait_until,
)

SHM = "/dev/shm" if Path("/dev/shm").is_dir() else None


async def reference(events, tmp_path: Path, prefix: str) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """The views of ``prefix`` after applying ``events`` in order, in-process (tmpfs when there is one)."""
    folder = Path(tempfile.mkdtemp(dir=SHM)) if SHM else tmp_path
    engine = await support.projection(folder / "reference.db")
    await support.apply(engine, events, batch_size=500)
    docs = await support.docs(engine)
    await engine.dispose()
    if folder != tmp_path:
        shutil.rmtree(folder, ignore_errors=True)
    return {k: v for k, v in docs.items() if k.startswith(prefix)}


async def test_events_become_views_served_over_grpc_and_published(kafka_server, sqlite_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bootstrap = kafka_server.bootstrap_servers
    prefix = f"v{uuid.uuid4().hex[:6]}"
    synth = Synth(seed=5, customers=30, months=4, prefix=prefix, txn_scale=0.5)
    events = synth.events()
    expected = await reference(events, tmp_path, prefix)
    ns = namespace()
    proc = hub(sqlite_url, bootstrap, tmp_path, topic_prefix=ns).start()
    engine = create_engine(sqlite_url)
    channel, api = stub(proc.target)
    try:
        await send(events, bootstrap, ns)

        await converge(engine, prefix, expected)
        some = sorted(expected)[3]
        got = await api.GetCustomerView(datahub_pb2.GetCustomerViewRequest(customer_id=some), metadata=META, timeout=5)
        assert got.customer_id == some and got.version >= 1 and got.update_time.seconds > 0
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await api.GetCustomerView(
                datahub_pb2.GetCustomerViewRequest(customer_id="nobody"), metadata=META, timeout=5
            )
        # No customer service runs here: the hub cannot tell "not built yet" from "no such
        # customer", and says so (ADR 0008; test_view_not_built.py has the real answers).
        assert missing.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(missing.value)[0] == "CUSTOMER_SERVICE_UNAVAILABLE"
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await api.GetCustomerView(datahub_pb2.GetCustomerViewRequest(customer_id=some), timeout=5)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED

        refreshed = await api.RefreshSegments(
            datahub_pb2.RefreshSegmentsRequest(request_id="refresh-0001"), metadata=META, timeout=30
        )
        assert refreshed.customers_scored > 0 and refreshed.views_changed > 0
        again = await api.RefreshSegments(
            datahub_pb2.RefreshSegmentsRequest(request_id="refresh-0001"), metadata=META, timeout=30
        )
        assert again == refreshed  # AIP-155: same request id, same answer
        counts = await api.ListSegments(datahub_pb2.ListSegmentsRequest(), metadata=META, timeout=5)
        # (the test's own topic namespace: only its customers)
        assert counts.total_customers == len(expected)
        assert sum(s.customer_count for s in counts.segments) == counts.total_customers
        assert sum(s.customer_count for s in counts.lifecycle_stages) == counts.total_customers
        assert len(counts.segments) == 6 and counts.refresh_time.seconds > 0
        biggest = max(counts.segments, key=lambda s: s.customer_count)
        seen: list[str] = []
        token = ""
        while True:
            page = await api.ListSegmentMembers(
                datahub_pb2.ListSegmentMembersRequest(segment=biggest.segment, page_size=4, page_token=token),
                metadata=META, timeout=5,
            )  # fmt: skip
            assert page.total_size == biggest.customer_count
            seen.extend(v.customer_id for v in page.customer_views)
            assert all(v.segment == biggest.segment for v in page.customer_views)
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == len(set(seen)) == biggest.customer_count
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await api.ListSegmentMembers(
                datahub_pb2.ListSegmentMembersRequest(segment=1, page_token="!!"), metadata=META, timeout=5
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # Every view reaches the compacted topic, keyed by customer id, newest version last.
        async def published() -> bool:
            async with UnitOfWork(engine) as uow:
                t = await store.active_tables(uow.session)
                return not await store.pending_views(uow.session, t, 10)

        await wait_until(published, 30, "views published")
        latest: dict[str, datahub_pb2.CustomerView] = {}
        for key, value, headers in await read_all(bootstrap, ns + TOPIC_CUSTOMER_VIEW):
            if key and key.decode().startswith(prefix):
                v = datahub_pb2.CustomerView.FromString(value or b"")
                assert headers["ce_type"] == b"bank.datahub.v1.CustomerView"
                assert v.version >= latest.get(v.customer_id, datahub_pb2.CustomerView()).version
                latest[v.customer_id] = v
        assert set(latest) == set(expected)
        served = await api.GetCustomerView(
            datahub_pb2.GetCustomerViewRequest(customer_id=some), metadata=META, timeout=5
        )
        assert latest[some] == served
    finally:
        await channel.close()
        proc.stop()
        await engine.dispose()


async def test_poison_events_go_to_the_dlq_and_the_partition_keeps_flowing(kafka_server, pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bootstrap = kafka_server.bootstrap_servers
    prefix = f"p{uuid.uuid4().hex[:6]}"
    group = f"dh-poison-{uuid.uuid4().hex[:6]}"
    customer = f"{prefix}-9-000001"  # a real customer of the data set: same partition as its good events
    synth = Synth(seed=9, customers=3, months=2, prefix=prefix)
    events = synth.events()
    ns = namespace()
    proc = hub(pg_url, bootstrap, tmp_path, topic_prefix=ns, group=group, ZT_DATAHUB_MAX_ATTEMPTS="2").start()
    engine = create_engine(pg_url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        # 1. undecodable: no envelope, garbage payload; 2. decodable but never applicable
        await producer.send_and_wait(ns + TOPIC_SUBSCRIPTION, key=customer.encode(), value=b"\x00garbage",
                                     headers=[("ce_type", b"bank.product.v1.TransactionPosted")])  # fmt: skip
        bad = pev.TransactionPosted(
            customer_id=customer, subscription_id="s-x", version=1, transaction=product_pb2.Transaction(direction=1)
        )  # no id, no amount
        record = build_record(bad, source="test", aggregate_type="subscription", aggregate_id="s-x", version=1)
        await producer.send_and_wait(ns + record.topic, key=record.key, value=record.value, headers=record.headers)
        await send(events, bootstrap, ns)  # good events behind the poison on the same partitions
        expected = await reference(events, tmp_path, prefix)

        await converge(engine, prefix, expected)
        # at-least-once into the DLQ: a record may be dead-lettered again if its batch is retried
        dead: list = []

        async def both_dead() -> bool:
            records = await read_all(bootstrap, f"{ns}{group}.dlq")  # the namespace covers the group
            by_offset = {(h["dlq_partition"], h["dlq_offset"]): (k, v, h) for k, v, h in records}
            dead[:] = [r for r in by_offset.values() if r[0] == customer.encode()]
            return len(dead) == 2

        await wait_until(both_dead, 30, "two dead letters")
        errors = sorted(h["dlq_error"].decode() for _, _, h in dead)
        assert any("BadEvent" in e or "transaction" in e for e in errors), errors
        assert all(
            h["dlq_group"] == (ns + group).encode() and h["dlq_topic"] == (ns + TOPIC_SUBSCRIPTION).encode()
            for _, _, h in dead
        )
        assert any(h.get("ce_id") == record.event_id.encode() for _, _, h in dead)  # original headers kept
    finally:
        await producer.stop()
        proc.stop()
        await engine.dispose()


async def test_rebuild_replays_into_the_other_set_and_swaps_while_serving(kafka_server, sqlite_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bootstrap = kafka_server.bootstrap_servers
    prefix = f"r{uuid.uuid4().hex[:6]}"
    synth = Synth(seed=21, customers=20, months=3, prefix=prefix, txn_scale=0.5)
    events = synth.events()
    group = f"dh-rebuild-{uuid.uuid4().hex[:6]}"
    ns = namespace()
    proc = hub(sqlite_url, bootstrap, tmp_path, topic_prefix=ns, group=group).start()
    engine = create_engine(sqlite_url)
    channel, api = stub(proc.target)
    try:
        await send(events, bootstrap, ns)
        expected = await reference(events, tmp_path, prefix)

        await converge(engine, prefix, expected)
        # RFM quintiles are over the whole population: let the hub finish every topic first.
        await wait_until(lambda: caught_up(bootstrap, group, ns), 60, "the hub to consume every topic")
        await api.RefreshSegments(datahub_pb2.RefreshSegmentsRequest(), metadata=META, timeout=30)
        before = await docs_for(engine, prefix)
        some = sorted(expected)[0]
        old = await api.GetCustomerView(datahub_pb2.GetCustomerViewRequest(customer_id=some), metadata=META, timeout=5)
        env = base_env(ZT_DATABASE_URL=sqlite_url, ZT_KAFKA_BOOTSTRAP_SERVERS=bootstrap, ZT_KAFKA_TOPIC_PREFIX=ns)
        rebuild = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.data_hub.rebuild", cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        served_during = 0
        while rebuild.returncode is None:  # the old set keeps serving while the new one is built
            got = await api.GetCustomerView(
                datahub_pb2.GetCustomerViewRequest(customer_id=some), metadata=META, timeout=5
            )
            served_during += got.customer_id == some
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rebuild.wait(), 0.2)
        out, err = await rebuild.communicate()
        assert rebuild.returncode == 0, err.decode()[-2000:]
        assert served_during > 0
        done = subprocess.CompletedProcess([], 0, out.decode(), err.decode())
        assert "swapped in" in done.stdout, done.stdout
        async with UnitOfWork(engine) as uow:
            assert (await store.read_state(uow.session))["active"] == "b"
        # The rebuilt views equal the live ones (same content; versions continue above the old ones).
        after = await docs_for(engine, prefix)
        assert after == before, explain_diff(after, before)
        new = await api.GetCustomerView(datahub_pb2.GetCustomerViewRequest(customer_id=some), metadata=META, timeout=5)
        assert new.version > old.version
        (
            new.ClearField("version"),
            new.ClearField("update_time"),
            old.ClearField("version"),
            old.ClearField("update_time"),
        )
        assert new == old
        # Live events after the swap land in the new set.
        later = Synth(seed=22, customers=3, months=1, prefix=prefix + "z").events()
        await send(later, bootstrap, ns)
        (tmp_path / "later").mkdir()
        expected_later = await reference(later, tmp_path / "later", prefix + "z")

        async def later_applied() -> bool:
            return await docs_for(engine, prefix + "z") == expected_later

        await wait_until(later_applied, 60, "events after the swap")
    finally:
        await channel.close()
        proc.stop()
        await engine.dispose()

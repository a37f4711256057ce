"""The view worker's publish round clears the published flags, on PostgreSQL (one UPDATE on the
pool's asyncpg connection, ADR 0048) and SQLite (a unit of work): each changed view goes out once,
and a row a consumer batch holds right now keeps its flag (published again later: at-least-once)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.datahub.v1 import datahub_pb2
from devtools.synth import Synth
from services.data_hub import schema
from services.data_hub.domain import Rules
from services.data_hub.projector import HubProjection, ViewWorker
from services.kit.applier import BatchApplier
from services.kit.db import UnitOfWork
from services.kit.events import TOPIC_CUSTOMER_VIEW
from services.kit.inbox import _decode
from services.kit.kafka import ensure_topics, make_producer
from tests.integration.data_hub.conftest import migrated_hub_engine
from tests.support.topics import read_records


class _ViewTopic:
    """A real producer, and the view topic of a namespace of this test's own, read back."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"vw{uuid.uuid4().hex[:8]}."
        self.producer = make_producer(bootstrap, client_id="view-worker-test")

    async def sent(self, expected: int) -> list[datahub_pb2.CustomerView]:
        """Every view on the topic (at least ``expected`` of them, and whatever came after)."""
        records = await read_records(self.bootstrap, self.prefix + TOPIC_CUSTOMER_VIEW, expected)
        return [datahub_pb2.CustomerView.FromString(r.value) for r in records]


@pytest.fixture
async def views(kafka_server: Any) -> AsyncIterator[_ViewTopic]:
    topic = _ViewTopic(kafka_server.bootstrap_servers)
    await ensure_topics(topic.bootstrap, {TOPIC_CUSTOMER_VIEW: {}}, prefix=topic.prefix)
    await topic.producer.start()
    try:
        yield topic
    finally:
        await topic.producer.stop()


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """PostgreSQL only: row locks (SQLite's writers take turns, so no batch holds a row there)."""
    async with migrated_hub_engine(pg_url) as engine:
        yield engine


async def _seed(engine: AsyncEngine) -> None:
    """A small history applied as the consumer applies it (views left dirty for the worker)."""
    events = Synth(seed=3, customers=4, months=1, prefix="vw", txn_scale=0.2).events()
    records = []
    for offset, r in enumerate(e.record() for e in events):
        record = ConsumerRecord(r.topic, 0, offset, 0, 0, r.key, r.value, None, len(r.key), len(r.value), r.headers)
        records.append((record, _decode(record)))
    applier = BatchApplier(
        engine=engine, group_id="vw", handler=None, projection=HubProjection(), dead_letters=None,  # type: ignore[arg-type]
        max_attempts=1, retry_backoff_s=0.0, trace_each_max=0,
    )  # fmt: skip
    await applier.transaction(records, [])


async def _flags(engine: AsyncEngine) -> dict[str, tuple[bool, int, int | None]]:
    async with UnitOfWork(engine) as uow:
        c = (await schema.active_tables(uow.session)).customers
        rows = await uow.session.execute(
            select(c.c.customer_id, c.c.pending_publish, c.c.version, c.c.published_version)
        )
        return {r[0]: (bool(r[1]), r[2], r[3]) for r in rows}


async def test_each_changed_view_is_published_once_and_its_flag_cleared_at_its_version(
    hub_engine: AsyncEngine, views: _ViewTopic
) -> None:
    engine = hub_engine
    await _seed(engine)
    worker = ViewWorker(engine, views.producer, Rules.from_json(""), topic_prefix=views.prefix)
    changed, published = await worker.run_once()
    flags = await _flags(engine)
    assert changed == published == len(flags) > 0
    assert await worker.run_once() == (0, 0)  # nothing left to publish
    sent = await views.sent(published)
    assert len(sent) == published  # once each
    assert {v.customer_id: v.version for v in sent} == {cid: f[1] for cid, f in flags.items()}
    assert all(not pending and published_version == version for pending, version, published_version in flags.values())


async def test_a_view_whose_row_a_batch_holds_keeps_its_flag_and_goes_out_again(
    pg_engine: AsyncEngine, views: _ViewTopic
) -> None:
    engine = pg_engine
    await _seed(engine)
    rules = Rules.from_json("")
    await ViewWorker(engine, None, rules).run_once()  # rendered, waiting to be published
    worker = ViewWorker(engine, views.producer, rules, topic_prefix=views.prefix)
    held = sorted(await _flags(engine))[0]
    async with UnitOfWork(engine) as batch:  # a consumer batch holding one customer's row
        c = (await schema.active_tables(batch.session)).customers
        await batch.session.execute(select(c.c.customer_id).where(c.c.customer_id == held).with_for_update())
        await worker.run_once(render=False)
        assert [cid for cid, f in (await _flags(engine)).items() if f[0]] == [held]
    await worker.run_once(render=False)
    assert not any(f[0] for f in (await _flags(engine)).values())
    sent = await views.sent(len(await _flags(engine)) + 1)
    assert [v.customer_id for v in sent].count(held) == 2  # sent again: at-least-once

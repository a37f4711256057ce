"""The customer event feed's rows written by the hub's consumer (ADR 0062): from the decoded
events, the very rows the event-log index made from the records (``row_of``), and only for the
customer and subscription topics, once per event id."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from devtools.synth import Synth
from services.data_hub.config import TOPIC_CUSTOMER, TOPIC_PRODUCT, TOPIC_SUBSCRIPTION, DataHubSettings
from services.data_hub.event_log import FEED_COLUMNS, customer_events, feed_row, feed_rows, row_of
from services.data_hub.projector import HubProjection
from services.kit import ReceivedEvent, as_dicts
from services.kit.db import UnitOfWork
from services.kit.inbox import _decode

from . import support


def _named(row: Any) -> dict[str, Any]:
    (named,) = as_dicts(FEED_COLUMNS, [row])  # (as the feed's statement paths name a row)
    return named


def test_the_rows_columns_are_the_feed_tables() -> None:
    assert tuple(c.name for c in customer_events.columns) == FEED_COLUMNS


def _consumed(headers: Any, topic: str, offset: int, value: bytes = b"") -> tuple[Any, Any]:
    record = SimpleNamespace(headers=list(headers), value=value, key=None, topic=topic, partition=1, offset=offset)
    return record, _decode(record)  # type: ignore[arg-type]


def test_rows_from_decoded_events_are_the_rows_of_their_records() -> None:
    records = Synth(seed=3, customers=4, months=2, prefix="fr", txn_scale=0.3).records()
    compared = 0
    for offset, r in enumerate(records):
        record, event = _consumed(r.headers, "ns." + r.topic, offset, r.value)
        assert isinstance(event, ReceivedEvent)
        assert feed_row(event) == row_of(record)  # type: ignore[arg-type]
        compared += row_of(record) is not None  # type: ignore[arg-type]
    assert compared > 50


def test_odd_headers_give_the_same_row_as_before() -> None:
    base = Synth(seed=4, customers=1, months=1, prefix="fo").records()[0]
    headers = dict(base.headers)
    variants = [
        {**headers, "ce_aggregateversion": b"-3"},  # no digits: version 0, as before
        {**headers, "ce_time": b""},  # an empty time: event_us 0
        {k: v for k, v in headers.items() if k != "ce_time"},  # no time: 0 (the event got "now")
        {k: v for k, v in headers.items() if k != "ce_subject"},  # no customer: no row
        {**headers, "ce_subject": b"x" * 65},  # too long for the column: no row
    ]
    for i, variant in enumerate(variants):
        record, event = _consumed(variant.items(), "p." + base.topic, i, base.value)
        if isinstance(event, ReceivedEvent):
            assert feed_row(event) == row_of(record), variant  # type: ignore[arg-type]


def test_only_customer_and_subscription_topics_once_per_event() -> None:
    records = Synth(seed=5, customers=2, months=1, prefix="ft").records()
    topics = DataHubSettings.model_construct(kafka_topic_prefix="ns.").feed_topics
    assert topics == {"ns." + TOPIC_CUSTOMER, "ns." + TOPIC_SUBSCRIPTION}
    events = [_consumed(r.headers, "ns." + r.topic, i, r.value)[1] for i, r in enumerate(records)]
    rows = feed_rows([*events, *events[:3]], topics)  # (re-sent within the batch)
    expected = {e.id for e in events if e.topic != "ns." + TOPIC_PRODUCT and e.subject}
    ids = [_named(row)["event_id"] for row in rows]
    assert ids == list(dict.fromkeys(ids))
    assert set(ids) == expected
    assert any(e.topic == "ns." + TOPIC_PRODUCT for e in events)


async def test_the_projection_writes_the_feed_with_the_batch_and_dead_letters_once_per_event(tmp_path: Path) -> None:
    records = Synth(seed=6, customers=3, months=2, prefix="fs", txn_scale=0.3).records()
    consumed = [_consumed(r.headers, "ns." + r.topic, i, r.value) for i, r in enumerate(records)]
    events = [event for _, event in consumed]
    topics = DataHubSettings.model_construct(kafka_topic_prefix="ns.").feed_topics
    projection = HubProjection(feed_topics=topics)
    # a record on the customer topic that never decodes, as the consumer dead-letters it
    customer = next(r for r in records if r.topic == TOPIC_CUSTOMER)
    dead_headers = [(k, b"dead-1" if k == "ce_id" else v) for k, v in customer.headers]
    dead, undecodable = _consumed(dead_headers, "ns." + TOPIC_CUSTOMER, len(records), b"\xff\xfe")
    assert not isinstance(undecodable, ReceivedEvent)
    engine = await support.projection(tmp_path / "feed.db")
    try:
        for batch in (events[:40], events[40:], events[:10]):  # (the last one re-delivered)
            async with UnitOfWork(engine) as uow:
                await projection.apply(uow.session, projection.fold(batch))
                await uow.commit()
        for _ in range(2):  # (told once per record by the kit; a second time changes nothing)
            async with UnitOfWork(engine) as uow:
                await projection.dead_lettered(uow.session, dead, None)  # type: ignore[arg-type]
                await uow.commit()
        async with engine.connect() as conn:
            stored = [dict(r._mapping) for r in (await conn.execute(select(customer_events))).all()]
    finally:
        await engine.dispose()
    expected = [_named(row) for row in [*feed_rows(events, topics), row_of(dead)]]  # type: ignore[arg-type]
    assert sorted(stored, key=lambda r: r["event_id"]) == sorted(expected, key=lambda r: r["event_id"])
    assert len(expected) > 20 and expected[-1]["event_id"] == "dead-1"

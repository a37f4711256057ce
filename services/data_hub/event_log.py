"""The customer's event feed (``ListCustomerEvents``): every event about a customer the hub receives.

:class:`EventLogIndex` reads the customer and subscription topics under its own consumer group
(``<group>.event-log``, independent of the projection's: it never slows or blocks it) and keeps
each CloudEvent's attributes — id, type, time, subject (the customer id), aggregate and version,
topic position — in ``dh_customer_events`` (insert-if-absent by event id, ADR 0040). Payloads are
not kept: the feed says *what* happened and when; the view says what the customer looks like now.
Product catalogue events are not about a customer and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bank.datahub.v1 import datahub_pb2
from services.data_hub.codecs import MICROS, us_ts
from services.data_hub.config import TOPIC_CUSTOMER, TOPIC_SUBSCRIPTION, DataHubSettings
from services.data_hub.schema import metadata
from services.data_hub.topic_index import TopicIndex, decode_page_token, encode_page_token

customer_events = Table(
    "dh_customer_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("event_us", BigInteger, nullable=False),
    Column("aggregate_type", String(64), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("aggregate_version", BigInteger, nullable=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Index("ix_dh_customer_events_feed", "customer_id", "event_us", "event_id"),
)


def _time_us(raw: str) -> int:
    try:
        return int(datetime.fromisoformat(raw).timestamp() * MICROS)
    except ValueError:
        return 0


#: The headers a row is made of (the others, e.g. ``traceparent``, are not decoded).
_USED = frozenset(
    ("ce_subject", "ce_id", "ce_type", "ce_time", "ce_aggregatetype", "ce_aggregateid", "ce_aggregateversion")
)


def row_of(record: ConsumerRecord[Any, Any]) -> dict[str, Any] | None:
    """A CloudEvent record as a ``dh_customer_events`` row; None when it names no customer."""
    text = {k: v.decode("utf-8", "replace") for k, v in record.headers or () if k in _USED}
    subject, event_id = text.get("ce_subject", ""), text.get("ce_id", "")
    if not subject or not event_id or len(subject) > 64 or len(event_id) > 64:
        return None
    version = text.get("ce_aggregateversion", "0")
    return {
        "event_id": event_id,
        "customer_id": subject,
        "event_type": text.get("ce_type", "")[:200],
        "event_us": _time_us(text.get("ce_time", "")),
        "aggregate_type": text.get("ce_aggregatetype", "")[:64],
        "aggregate_id": text.get("ce_aggregateid", "")[:64],
        "aggregate_version": int(version) if version.isdigit() else 0,
        "topic": record.topic[:249],
        "partition": record.partition,
        "offset": record.offset,
    }


class EventLogIndex(TopicIndex):
    """Indexes the customer and subscription topics into ``dh_customer_events``."""

    table, key, name, creates_topics = customer_events, "event_id", "event-log-index", False
    max_records, bulk = 2000, True  # (as many as the hub consumer's batches; one JSON parameter)
    # (the feed may lag the view by a poll, ADR 0040: half a second of events a statement and an
    # offset commit, ADR 0059)
    linger_ms = 500

    def rows(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[dict[str, Any]]:
        rows = {}
        for record in records:
            if (row := row_of(record)) is not None:
                rows[row["event_id"]] = row  # (a batch may hold a re-sent event twice)
        return list(rows.values())


def event_log_index(settings: DataHubSettings, engine: Any) -> EventLogIndex:
    topics = [settings.kafka_topic_prefix + t for t in (TOPIC_CUSTOMER, TOPIC_SUBSCRIPTION)]
    return EventLogIndex(
        engine, settings.kafka_bootstrap_servers, topics,
        group_id=f"{settings.group_id}.event-log", client_id=settings.kafka_client_id,
        stall_after_s=settings.datahub_stall_after_s,
    )  # fmt: skip


def encode_token(event_us: int, event_id: str) -> str:
    return encode_page_token("e1", event_us, event_id)


def decode_token(token: str) -> tuple[int, str]:
    return decode_page_token("e1", token)


def to_message(row: Any) -> datahub_pb2.CustomerEvent:
    msg = datahub_pb2.CustomerEvent(
        event_id=row.event_id, event_type=row.event_type, aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id, aggregate_version=row.aggregate_version, topic=row.topic,
        partition=row.partition, offset=row.offset,
    )  # fmt: skip
    if row.event_us and (ts := us_ts(row.event_us)) is not None:
        msg.event_time.CopyFrom(ts)
    return msg


async def page(
    session: AsyncSession, customer_id: str, size: int, after: tuple[int, str] | None
) -> datahub_pb2.ListCustomerEventsResponse:
    """Newest first (event time, then event id), ``size`` events after ``after``."""
    c = customer_events.c
    query = select(customer_events).where(c.customer_id == customer_id)
    if after is not None:
        query = query.where(or_(c.event_us < after[0], and_(c.event_us == after[0], c.event_id < after[1])))
    rows = (await session.execute(query.order_by(c.event_us.desc(), c.event_id.desc()).limit(size + 1))).all()
    more, rows = len(rows) > size, rows[:size]
    token = encode_token(rows[-1].event_us, rows[-1].event_id) if more and rows else ""
    return datahub_pb2.ListCustomerEventsResponse(events=[to_message(r) for r in rows], next_page_token=token)

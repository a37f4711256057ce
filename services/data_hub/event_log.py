"""The customer's event feed (``ListCustomerEvents``): every event about a customer the hub receives.

Each CloudEvent's attributes — id, type, time, subject (the customer id), aggregate and version,
topic position — are kept in ``dh_customer_events`` (insert-if-absent, ADR 0040, by its key
:data:`FEED_KEY`: the customer, the event's time, its id, ADR 0068).
Since ADR 0062 the hub's own consumer writes them, in the batch's transaction, from the events
it has already fetched and decoded (:func:`feed_row`, through the projection's fold and apply),
and those it dead-letters (:func:`row_of`, the projection's ``dead_lettered``): one fetch of the
customer and subscription topics instead of two, and no lag behind the view. Payloads are not
kept: the feed says *what* happened and when; the view says what the customer looks like now.
Product catalogue events are not about a customer and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy import BigInteger, Column, Integer, PrimaryKeyConstraint, String, Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bank.datahub.v1 import datahub_pb2
from services.data_hub.codecs import MICROS, us_ts
from services.data_hub.schema import metadata
from services.data_hub.topic_index import decode_page_token, encode_page_token
from services.kit import ReceivedEvent, as_dicts, bulk_insert

#: A feed row's key: the feed's newest-first order within a customer, the event id last (ADR 0068:
#: one index, where the event id's own key and the order's index were two). A re-sent event has
#: the same customer, time and id: insert-if-absent on this key lists it once.
FEED_KEY = ("customer_id", "event_us", "event_id")

customer_events = Table(
    "dh_customer_events",
    metadata,
    Column("event_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("event_us", BigInteger, nullable=False),
    Column("aggregate_type", String(64), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("aggregate_version", BigInteger, nullable=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    PrimaryKeyConstraint(*FEED_KEY, name="dh_customer_events_pkey"),
)
#: A feed row's values, in this order (the table's): :func:`feed_row` and :func:`row_of` build
#: tuples, as a COPY takes them (ADR 0071).
FEED_COLUMNS = tuple(c.name for c in customer_events.columns)


def _time_us(raw: str) -> int:
    try:
        return int(datetime.fromisoformat(raw).timestamp() * MICROS)
    except ValueError:
        return 0


#: The headers a row is made of (the others, e.g. ``traceparent``, are not decoded).
_USED = frozenset(
    ("ce_subject", "ce_id", "ce_type", "ce_time", "ce_aggregatetype", "ce_aggregateid", "ce_aggregateversion")
)


def row_of(record: ConsumerRecord[Any, Any]) -> tuple[Any, ...] | None:
    """A CloudEvent record as a ``dh_customer_events`` row (:data:`FEED_COLUMNS`' order); None
    when it names no customer."""
    text = {k: v.decode("utf-8", "replace") for k, v in record.headers or () if k in _USED}
    subject, event_id = text.get("ce_subject", ""), text.get("ce_id", "")
    if not subject or not event_id or len(subject) > 64 or len(event_id) > 64:
        return None
    version = text.get("ce_aggregateversion", "0")
    return (
        event_id,
        subject,
        text.get("ce_type", "")[:200],
        _time_us(text.get("ce_time", "")),
        text.get("ce_aggregatetype", "")[:64],
        text.get("ce_aggregateid", "")[:64],
        int(version) if version.isdigit() else 0,
        record.topic[:249],
        record.partition,
        record.offset,
    )


def feed_row(event: ReceivedEvent) -> tuple[Any, ...] | None:
    """:func:`row_of` of the record ``event`` was decoded from, from the decoded event (its
    attributes are that record's headers decoded; the same row, without decoding them again)."""
    subject, event_id, headers = event.subject, event.id, event.headers
    if not subject or len(subject) > 64 or len(event_id) > 64:
        return None
    raw_version = headers.get("ce_aggregateversion")
    return (
        event_id,
        subject,
        event.type[:200],
        # (a record without a time was given the time it arrived: the row keeps 0, as row_of)
        int(event.time.timestamp() * MICROS) if headers.get("ce_time") else 0,
        event.aggregate_type[:64],
        event.aggregate_id[:64],
        event.version if raw_version is not None and raw_version.isdigit() else 0,
        event.topic[:249],
        event.partition,
        event.offset,
    )


def feed_rows(events: Sequence[ReceivedEvent], topics: frozenset[str]) -> list[tuple[Any, ...]]:
    """The feed's rows of a batch's events on ``topics``, once per event id."""
    rows = {}
    for event in events:
        if event.topic in topics and (row := feed_row(event)) is not None:
            rows[event.id] = row  # (a batch may hold a re-sent event twice)
    return list(rows.values())


async def insert_feed(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    """Insert-if-absent (a re-delivered event is listed once); rows as :func:`feed_row`'s."""
    if rows:
        await bulk_insert(session, customer_events, as_dicts(FEED_COLUMNS, rows), skip_conflicts_on=FEED_KEY)


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

"""The dead-letter browser's storage: the hub's DLQ topic (``<group>.dlq``) indexed in its database.

:class:`DeadLetterIndex` consumes the DLQ topic (its own consumer group, ``<group>.dlq-index``)
and inserts one ``dh_dead_letters`` row per record — id ``<dlq partition>-<dlq offset>``, the
record's payload and headers as they were — then commits the offsets (insert-if-absent: a
re-delivered record changes nothing). The rows carry the operator's decisions: DEAD, then
REPLAYED (with the outcome) or QUARANTINED (with the reason). Payloads are never shown; error
texts and header values are scrubbed of PII-shaped strings before they leave the hub
(events carry no clear PII, but an exception message might quote anything).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bank.datahub.v1 import operations_pb2
from services.data_hub.codecs import now_us, us_ts
from services.data_hub.schema import metadata
from services.data_hub.topic_index import TopicIndex, decode_page_token, encode_page_token
from services.kit import scrub_text

DeadLetter = operations_pb2.DeadLetter
DEAD, REPLAYED, QUARANTINED = DeadLetter.STATE_DEAD, DeadLetter.STATE_REPLAYED, DeadLetter.STATE_QUARANTINED
#: Header values shown as they are: trace context is hex and may hold digit runs that look like PII.
_UNSCRUBBED = frozenset({"traceparent", "tracestate"})

dead_letters = Table(
    "dh_dead_letters",
    metadata,
    Column("dead_letter_id", String(32), primary_key=True),
    Column("state", Integer, nullable=False),
    Column("consumer_group", String(249), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("headers", LargeBinary, nullable=False),  # JSON [[key, base64 value], ...], as received
    Column("payload", LargeBinary, nullable=True),
    Column("dead_us", BigInteger, nullable=False),
    Column("resolve_us", BigInteger, nullable=True),
    Column("resolved_by", String(200), nullable=False, default=""),
    Column("replay_outcome", String(16), nullable=False, default=""),
    Column("quarantine_reason", String(500), nullable=False, default=""),
    Index("ix_dh_dead_letters_state", "state", "dead_us"),
    Index("ix_dh_dead_letters_order", "dead_us", "dead_letter_id"),
)


def row_of(record: ConsumerRecord[Any, Any], now: int) -> dict[str, Any]:
    """A DLQ record as a ``dh_dead_letters`` row (state DEAD)."""
    headers: list[tuple[str, bytes]] = list(record.headers or ())
    text = {k: v.decode("utf-8", "replace") for k, v in headers}
    attempts = text.get("dlq_attempts", "0")
    return {
        "dead_letter_id": f"{record.partition}-{record.offset}",
        "state": DEAD,
        "consumer_group": text.get("dlq_group", "")[:249],
        "topic": text.get("dlq_topic", "")[:249],
        "partition": int(text.get("dlq_partition", "0") or 0),
        "offset": int(text.get("dlq_offset", "0") or 0),
        "event_id": text.get("ce_id", "")[:64],
        "event_type": text.get("ce_type", "")[:200],
        "subject": text.get("ce_subject", "")[:64],
        "error": text.get("dlq_error", ""),
        "attempts": int(attempts) if attempts.isdigit() else 0,
        "headers": orjson.dumps([[k, base64.b64encode(v).decode()] for k, v in headers]),
        "payload": record.value,
        "dead_us": now,
        "resolved_by": "",
        "replay_outcome": "",
        "quarantine_reason": "",
    }


def original_headers(row: Any) -> list[tuple[str, bytes]]:
    """The record's headers as it was on its source topic (without the ``dlq_*`` ones)."""
    pairs = orjson.loads(row.headers)
    return [(k, base64.b64decode(v)) for k, v in pairs if not k.startswith("dlq_")]


def to_message(row: Any) -> operations_pb2.DeadLetter:
    shown = {}
    for key, value in orjson.loads(row.headers):
        text = base64.b64decode(value).decode("utf-8", "replace")
        shown[key] = text if key in _UNSCRUBBED else scrub_text(text)
    msg = DeadLetter(
        dead_letter_id=row.dead_letter_id, state=row.state, consumer_group=row.consumer_group, topic=row.topic,
        partition=row.partition, offset=row.offset, event_id=row.event_id, event_type=row.event_type,
        subject=row.subject, error=scrub_text(row.error), attempts=row.attempts, headers=shown,
        resolved_by=row.resolved_by, replay_outcome=row.replay_outcome,
        quarantine_reason=scrub_text(row.quarantine_reason), payload_size=len(row.payload or b""),
    )  # fmt: skip
    if (ts := us_ts(row.dead_us)) is not None:
        msg.dead_time.CopyFrom(ts)
    if (ts := us_ts(row.resolve_us)) is not None:
        msg.resolve_time.CopyFrom(ts)
    return msg


async def get(session: AsyncSession, dead_letter_id: str, *, lock: bool = False) -> Any:
    query = select(dead_letters).where(dead_letters.c.dead_letter_id == dead_letter_id)
    return (await session.execute(query.with_for_update() if lock else query)).first()


def encode_token(dead_us: int, dead_letter_id: str) -> str:
    return encode_page_token("d1", dead_us, dead_letter_id)


def decode_token(token: str) -> tuple[int, str]:
    return decode_page_token("d1", token)


async def page(
    session: AsyncSession, state: int, size: int, after: tuple[int, str] | None
) -> tuple[list[Any], str, int]:
    """Newest first: (rows, next page token or "", total matching)."""
    c = dead_letters.c
    cond = c.state == state if state else true()
    query = select(dead_letters).where(cond)
    if after is not None:
        query = query.where(or_(c.dead_us < after[0], and_(c.dead_us == after[0], c.dead_letter_id < after[1])))
    rows = (await session.execute(query.order_by(c.dead_us.desc(), c.dead_letter_id.desc()).limit(size + 1))).all()
    total = int((await session.execute(select(func.count()).select_from(dead_letters).where(cond))).scalar_one())
    more = len(rows) > size
    rows = rows[:size]
    token = encode_token(rows[-1].dead_us, rows[-1].dead_letter_id) if more and rows else ""
    return list(rows), token, total


async def counts(session: AsyncSession) -> dict[int, int]:
    query = select(dead_letters.c.state, func.count()).group_by(dead_letters.c.state)
    return {int(k): int(v) for k, v in (await session.execute(query)).tuples().all()}


class DeadLetterIndex(TopicIndex):
    """Indexes the DLQ topic into ``dh_dead_letters`` (group ``<dlq topic>-index``)."""

    table, key, name = dead_letters, "dead_letter_id", "dead-letter-index"
    # (an operator's list, of a topic that is empty but for faults: a second behind is soon
    # enough, and an idle hub fetches it once a second instead of four times, ADR 0059)
    linger_ms = 1000

    def __init__(
        self, engine: AsyncEngine, bootstrap_servers: str, dlq_topic: str, *, client_id: str, stall_after_s: float = 30
    ) -> None:
        super().__init__(
            engine, bootstrap_servers, [dlq_topic], group_id=f"{dlq_topic}-index", client_id=client_id,
            stall_after_s=stall_after_s,
        )  # fmt: skip
        self.topic = dlq_topic

    def rows(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[dict[str, Any]]:
        now = now_us()
        return [row_of(r, now) for r in records]
